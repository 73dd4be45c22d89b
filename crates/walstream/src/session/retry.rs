//! Reconnect policy: exponential backoff with jitter, and the failover window.

use std::time::{Duration, Instant};

/// How retryable failures (connection lost, server restarting, slot still held by a departing
/// walsender) are retried. Permanent errors (authentication, a missing slot, another cluster)
/// are never retried.
///
/// The delay before attempt `n` (from 1) is `initial_backoff * multiplier^(n-1)`, capped at
/// `max_backoff`, then reduced by a random fraction of up to `jitter` so that many clients
/// do not reconnect in step. A session that streamed data resets the count.
///
/// ```
/// use std::time::Duration;
/// use walstream::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(Some(5))
///     .backoff(Duration::from_millis(200), Duration::from_secs(10));
/// assert_eq!(policy.delay(1, 0.0), Duration::from_millis(200));
/// assert_eq!(policy.delay(2, 0.0), Duration::from_millis(400));
/// assert_eq!(policy.delay(30, 0.0), Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: Option<u32>,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for RetryPolicy {
    /// Up to 20 consecutive failed attempts, from 100 ms doubling to at most 30 s, with up to
    /// 50% jitter: a server restart of several minutes is ridden out.
    fn default() -> Self {
        Self {
            max_attempts: Some(20),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure ends the stream.
    pub fn never() -> Self {
        Self::default().max_attempts(Some(0))
    }

    /// Retry for as long as the errors are retryable.
    pub fn forever() -> Self {
        Self::default().max_attempts(None)
    }

    /// The most consecutive failed attempts before giving up (`None`: no limit).
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }

    /// The first delay and the largest.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The factor between successive delays (at least 1).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = if m.is_finite() { m.max(1.0) } else { 1.0 };
        self
    }

    /// The largest fraction (0 to 1) taken off a delay at random.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Whether attempt `n` (from 1) may be made.
    pub fn allows(&self, n: u32) -> bool {
        self.max_attempts.is_none_or(|max| n <= max)
    }

    /// The delay before attempt `n` (from 1), with `random` in `[0, 1)` choosing the jitter.
    pub fn delay(&self, n: u32, random: f64) -> Duration {
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exp);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::try_from_secs_f64(jittered).unwrap_or(self.max_backoff)
    }
}

/// The random fractions that choose each delay's jitter: fastrand's generator, seeded from
/// its thread-local one (itself seeded per process), so that clients started together do not
/// draw the same delays.
#[derive(Debug)]
pub(crate) struct Jitter(fastrand::Rng);

impl Jitter {
    pub(crate) fn new() -> Self {
        Self(fastrand::Rng::new())
    }

    /// The next number in `[0, 1)`.
    pub(crate) fn next(&mut self) -> f64 {
        self.0.f64()
    }
}

/// The failover window: how long failures that say "no server matches
/// `target_session_attrs`" go on being retried. Sans-IO (time passed in): the window opens at
/// the first such failure and closes a session that delivered data.
#[derive(Debug)]
pub(crate) struct FailoverWindow {
    window: Duration,
    since: Option<Instant>,
}

impl FailoverWindow {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            since: None,
        }
    }

    /// A failed attempt at `now`, `no_primary` when no server matched `target_session_attrs`:
    /// whether it may still be retried. Other failures are the [`RetryPolicy`]'s to judge.
    pub(crate) fn allows(&mut self, no_primary: bool, now: Instant) -> bool {
        if !no_primary {
            return true;
        }
        let since = *self.since.get_or_insert(now);
        now.saturating_duration_since(since) < self.window
    }

    /// How long the window has been open, if it is.
    pub(crate) fn open_for(&self, now: Instant) -> Option<Duration> {
        self.since.map(|s| now.saturating_duration_since(s))
    }

    /// A session delivered data: the failover, if there was one, is over.
    pub(crate) fn close(&mut self) {
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_cap_and_jitter_down() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(p.delay(100, 0.0), Duration::from_secs(30));
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(30));
        assert_eq!(p.delay(1, 0.999_999), Duration::from_nanos(50_000_050));
        assert!(p.allows(20) && !p.allows(21));
        assert!(!RetryPolicy::never().allows(1));
        assert!(RetryPolicy::forever().allows(u32::MAX));
    }

    #[test]
    fn the_failover_window_opens_at_the_first_no_primary_failure() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = FailoverWindow::new(s(60));
        // Other failures neither open nor use the window.
        assert!(w.allows(false, t0));
        assert_eq!(w.open_for(t0), None);
        assert!(w.allows(true, t0 + s(5)));
        assert!(w.allows(false, t0 + s(70)));
        assert!(w.allows(true, t0 + s(64)));
        assert_eq!(w.open_for(t0 + s(65)), Some(s(60)));
        assert!(!w.allows(true, t0 + s(65)));
        // A session that delivered data closes it; the next failover has a window of its own.
        w.close();
        assert!(w.allows(true, t0 + s(200)));
        assert!(!w.allows(true, t0 + s(260)));
        assert!(!FailoverWindow::new(Duration::ZERO).allows(true, t0));
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let mut j = Jitter::new();
        let xs: Vec<f64> = (0..1000).map(|_| j.next()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
