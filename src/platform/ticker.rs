//! Periodic background tasks that stop with the server: an interval that delays after a slow run
//! (never bursts to catch up) and a wait for its next tick that ends on the stop signal.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

/// Ticks every `period` (at least a second), the first at once; a late tick delays the next.
pub fn interval(period: Duration) -> Interval {
    let mut tick = tokio::time::interval(period.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Waits for the next tick: `true` to run, `false` once `stop` says stop (or its sender is gone).
pub async fn next_tick(tick: &mut Interval, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            _ = tick.tick() => return !*stop.borrow(),
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return false;
                }
            }
        }
    }
}
