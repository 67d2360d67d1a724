// engine/thread_name.cpp
#include "engine/thread_name.h"

#include <pthread.h>

#include <array>

namespace orch {

void name_this_thread(std::string_view name) {
  const std::string truncated(name.substr(0, kThreadNameMax));
  pthread_setname_np(pthread_self(), truncated.c_str());
}

std::string this_thread_name() {
  std::array<char, kThreadNameMax + 1> buf{};
  if (pthread_getname_np(pthread_self(), buf.data(), buf.size()) != 0) return "";
  return buf.data();
}

}  // namespace orch
