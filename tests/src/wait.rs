//! Polling with a bounded time: tests wait for states, never for fixed times.

use std::time::{Duration, Instant};

/// Calls `check` until it returns `Ok`, every 200 ms, for at most `timeout`;
/// then panics with `what` and the last reason `check` gave.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Checks that `check` keeps returning `Ok` for `period` (e.g. that nothing
/// gets recreated after a restart); panics at the first `Err`.
#[track_caller]
pub fn stays(what: &str, period: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        if let Err(why) = check() {
            panic!("{what} stopped holding: {why}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
