//! The random-drop harness of the cancel-safety tests: each call's future is given up at a
//! random point (after a timeout of some microseconds, or after a few polls) or awaited, many
//! times over, and the test checks what the object does next.
//!
//! ```no_run
//! # async fn example() {
//! use pgtest::cancel::{Mix, Tally};
//!
//! let mut rng = pgtest::seeded_rng();
//! let mut tally = Tally::default();
//! for _ in 0..100 {
//!     match Mix::LIVE.pick(&mut rng).run(tokio::time::sleep(std::time::Duration::from_micros(500))).await {
//!         Some(()) => tally.completed += 1,
//!         None => tally.dropped += 1,
//!     }
//! }
//! tally.check("sleep");
//! # }
//! ```

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Where one call's future is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropAt {
    /// When the timeout passes, if the call has not finished by then.
    Timeout(Duration),
    /// After this many polls (at least one), if the call has not finished by then.
    Polls(u32),
    /// Never: the call is awaited to its end.
    Never,
}

impl DropAt {
    /// Runs `fut` until it finishes or this drop point comes: `None` when it was dropped
    /// before it finished.
    ///
    /// Between polls of [`DropAt::Polls`] the task wakes itself at once, so the polls come
    /// as fast as the runtime runs the task and land wherever the future happens to be.
    pub async fn run<F: Future>(self, fut: F) -> Option<F::Output> {
        match self {
            DropAt::Timeout(d) => tokio::time::timeout(d, fut).await.ok(),
            DropAt::Polls(k) => {
                let mut fut = pin!(fut);
                let mut polls = 0;
                std::future::poll_fn(|cx| {
                    polls += 1;
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(v) => Poll::Ready(Some(v)),
                        Poll::Pending if polls >= k => Poll::Ready(None),
                        Poll::Pending => {
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                    }
                })
                .await
            }
            DropAt::Never => Some(fut.await),
        }
    }
}

/// How often each kind of [`DropAt`] is picked, and how far each may go. The weights are
/// relative: `timeouts: 5, polls: 3, awaits: 2` drops half the calls on a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// The weight of [`DropAt::Timeout`].
    pub timeouts: u32,
    /// Timeouts are drawn from zero up to (not including) this.
    pub max_timeout: Duration,
    /// The weight of [`DropAt::Polls`].
    pub polls: u32,
    /// Poll counts are drawn from 1 to this (at least 1).
    pub max_polls: u32,
    /// The weight of [`DropAt::Never`].
    pub awaits: u32,
}

impl Mix {
    /// For calls to a live server, which take tens of microseconds to milliseconds: half are
    /// given up within 3 ms, three in ten after 1-6 polls, one in five awaited.
    pub const LIVE: Mix = Mix {
        timeouts: 5,
        max_timeout: Duration::from_micros(3000),
        polls: 3,
        max_polls: 6,
        awaits: 2,
    };

    /// For reads from a local fake server whose bytes arrive within microseconds: half are
    /// given up within 400 µs, four in ten after 1-4 polls, one in ten awaited.
    pub const LOCAL: Mix = Mix {
        timeouts: 5,
        max_timeout: Duration::from_micros(400),
        polls: 4,
        max_polls: 4,
        awaits: 1,
    };

    /// Draws the drop point of one call.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> DropAt {
        let total = self.timeouts + self.polls + self.awaits;
        let draw = rng.u32(..total.max(1));
        if draw < self.timeouts {
            let max = u64::try_from(self.max_timeout.as_micros()).unwrap_or(u64::MAX);
            DropAt::Timeout(Duration::from_micros(rng.u64(..max.max(1))))
        } else if draw < self.timeouts + self.polls {
            DropAt::Polls(rng.u32(1..=self.max_polls.max(1)))
        } else {
            DropAt::Never
        }
    }
}

/// The completed and dropped calls of one test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls that finished.
    pub completed: u32,
    /// Calls whose future was dropped before it finished.
    pub dropped: u32,
}

impl Tally {
    /// Prints the counts and checks that both kinds happened: a run in which no call
    /// completed, or none was dropped, tested nothing.
    ///
    /// # Panics
    ///
    /// When either count is zero.
    pub fn check(&self, what: &str) {
        println!(
            "{what}: {} completed, {} dropped",
            self.completed, self.dropped
        );
        assert!(self.completed > 0, "{what}: no call completed");
        assert!(self.dropped > 0, "{what}: no call was dropped");
    }
}

/// Polls `fut` once, with a waker that does nothing: `Ready` when the future decides without
/// waiting for anything (a poisoned connection's error, for one).
pub fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    pin!(fut)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_stay_within_the_mix() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut timeouts, mut polls, mut never) = (0, 0, 0);
        for _ in 0..10_000 {
            match Mix::LIVE.pick(&mut rng) {
                DropAt::Timeout(d) => {
                    assert!(d < Duration::from_micros(3000));
                    timeouts += 1;
                }
                DropAt::Polls(k) => {
                    assert!((1..=6).contains(&k));
                    polls += 1;
                }
                DropAt::Never => never += 1,
            }
        }
        assert!((4500..5500).contains(&timeouts), "{timeouts}");
        assert!((2500..3500).contains(&polls), "{polls}");
        assert!((1500..2500).contains(&never), "{never}");
    }

    #[test]
    fn drop_points_give_up_or_finish() {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                let pending = std::future::pending::<()>;
                assert_eq!(DropAt::Polls(3).run(pending()).await, None);
                let timeout = DropAt::Timeout(Duration::from_micros(50));
                assert_eq!(timeout.run(pending()).await, None);
                assert_eq!(DropAt::Never.run(async { 7 }).await, Some(7));
                assert_eq!(DropAt::Polls(1).run(async { 8 }).await, Some(8));
            });
        assert_eq!(poll_once(async { 1 }), Poll::Ready(1));
        assert_eq!(poll_once(std::future::pending::<()>()), Poll::Pending);
    }
}
