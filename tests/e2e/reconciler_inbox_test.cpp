// A product finding of the convergence test, reduced to a deterministic case (real binary): a webhook that was
// acknowledged and sits in orch's own inbox is not lost, yet when the inbox thread is held up for longer than the
// grace the reconciler replays the transition itself and announces "unblocked (lost webhook)". The inbox is held
// up here the way a burst of starts holds it up: handling a start creates the task's git worktree under the
// project's flock, which the test keeps for a while (as concurrent clones and pushes do).
//
// Expected by issue 7 ("silence when in sync", "unblock == a lost event recovered"): no unblock. Fixed by the
// reconcile pass deferring both sides while deliveries are pending in the inbox (reconciler/reconciler.cpp).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "tests/e2e/e2e_world.h"

using namespace orch::testing;
using namespace orch::testing::e2e;
using namespace std::chrono_literals;

TEST_CASE("e2e reconciler: an acknowledged webhook queued in the inbox past the grace is not a lost webhook") {
  WorldOptions options;
  options.interval_s = 1;
  options.grace_s = 2;
  World w(options);
  REQUIRE_MESSAGE(w.orch->start(), w.orch->log_tail());
  const std::string in_progress = w.plane.state_id(kProjectId, "In Progress");

  // Item A reaches analysis and its analyst finishes: it waits for the human verdict.
  const std::string a = w.add_item("A");
  w.plane.set_work_item_state(a, in_progress);
  REQUIRE(w.plane.send_issue_webhook(w.plane_url(), kPlaneSecret, a).status == 202);
  REQUIRE_MESSAGE(eventually([&] { return w.count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") == 1; }, 60s),
                  w.orch->log_tail());

  // The project's git lock is busy: the next start's worktree creation waits in the inbox thread.
  const std::string lock_path = w.data_dir + "/clones/shop.lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX) == 0);
  const std::string b = w.add_item("B");
  w.plane.set_work_item_state(b, in_progress);
  REQUIRE(w.plane.send_issue_webhook(w.plane_url(), kPlaneSecret, b).status == 202);
  // A is approved and its webhook is delivered and acknowledged: it queues behind B's start.
  w.plane.set_work_item_state(a, w.plane.state_id(kProjectId, "Approved"));
  REQUIRE(w.plane.send_issue_webhook(w.plane_url(), kPlaneSecret, a).status == 202);

  // Hold the lock a little longer than grace + interval, then let the inbox go on.
  const auto held_until = std::chrono::steady_clock::now() + 5s;
  eventually([&] { return std::chrono::steady_clock::now() >= held_until; }, 6s);
  ::flock(fd, LOCK_UN);
  ::close(fd);

  REQUIRE_MESSAGE(eventually(
                      [&] {
                        return w.count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'") == 0 &&
                               w.count("SELECT COUNT(*) FROM tasks WHERE stage = 'development'") == 1;
                      },
                      60s),
                  w.orch->log_tail());
  // Nothing was lost: both deliveries were acknowledged and handled. So no transition is the reconciler's.
  CHECK(w.count("SELECT COUNT(*) FROM transitions WHERE cause = 'reconciler'") == 0);
  CHECK(w.count("SELECT COUNT(*) FROM notifications WHERE text LIKE '%unblocked%'") == 0);
  CHECK(w.orch->terminate() == std::optional<int>(0));
}
