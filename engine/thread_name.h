// engine/thread_name.h: the name an owned thread shows in `top -H`, `ps -L`, perf, gdb and /proc/<pid>/task/*/comm.
// Each owned thread names itself first thing, so that a busy or a starved thread is found by what it does, not by
// its number: bench/peer_once.sh reports CPU time and run-queue wait per name. Linux keeps the first 15 bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace orch {

inline constexpr std::size_t kThreadNameMax = 15;

// Names the calling thread (truncated to kThreadNameMax bytes). Best effort: a failure changes nothing else.
void name_this_thread(std::string_view name);

// The calling thread's name as the kernel reports it ("" if it cannot be read).
std::string this_thread_name();

}  // namespace orch
