// tests/support/pg_fixture_main.cc: orch_pg_fixture start|stop, the setup and cleanup tests of the CTest fixture
// "orch_pg" (CMakeLists.txt). `start` starts one throwaway PostgreSQL server for the whole ctest run and writes its
// state file ($ORCH_TEST_TMP/pg-server.state, see tests/support/pg_server.h); `stop` stops it and removes both.
// Exit codes: 0 done, 1 failed (the reason on stderr), 2 bad usage.
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>

#include "tests/support/pg_server.h"

int main(int argc, char** argv) {
  using orch::testing::PgServer;
  if (argc != 2 || (std::strcmp(argv[1], "start") != 0 && std::strcmp(argv[1], "stop") != 0)) {
    std::fprintf(stderr, "usage: orch_pg_fixture start|stop   (with ORCH_TEST_TMP set)\n");
    return 2;
  }
  const std::filesystem::path state = orch::testing::shared_state_file();
  if (state.empty()) {
    std::fprintf(stderr, "orch_pg_fixture: ORCH_TEST_TMP is not set\n");
    return 2;
  }
  try {
    // A server left by an interrupted run is stopped first, in both cases.
    if (auto stale = PgServer::adopt(state)) stale.reset();
    std::error_code ec;
    std::filesystem::remove(state, ec);
    if (std::strcmp(argv[1], "stop") == 0) return 0;
    auto server = PgServer::start();
    server->write_state(state);
    server->detach();
    std::printf("orch_pg_fixture: PostgreSQL listening in %s (state in %s)\n", server->socket_dir().c_str(),
                state.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "orch_pg_fixture: %s\n", e.what());
    return 1;
  }
}
