//! Coordination between instances: one small interface behind the access-token cache (with its
//! single-flight lock), the rate-limit buckets and the schedulers' leader lock.
//!
//! Two implementations: [`MemoryCoordinator`] here (one instance, the default) and the Redis one
//! in the server crate (`scrm::platform::coord`, several instances). The API client and the server only see
//! `Arc<dyn Coordinator>`. Nothing stored here is the source of truth: losing it costs one
//! `gettoken` or one scheduler run, never data.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The coordination store failed (Redis unreachable, protocol error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("coordination store unavailable: {0}")]
pub struct CoordError(pub String);

/// Shared state between instances. Keys are plain strings; callers namespace them
/// (`wecom:token:…`, `wecom:rl:…`, `scrm:leader:…`).
#[async_trait::async_trait]
pub trait Coordinator: Send + Sync + std::fmt::Debug {
    /// The value stored under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<String>, CoordError>;

    /// Stores `value` under `key` for `ttl`.
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordError>;

    /// Deletes `key` only while it still holds `value` (compare-and-delete, so an instance never
    /// drops a token another instance just refreshed). Returns whether it deleted.
    async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CoordError>;

    /// Takes the lock `key` for `owner` for `ttl` when it is free, or renews it when `owner`
    /// already holds it. Returns whether `owner` holds it now.
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CoordError>;

    /// Releases the lock `key` if `owner` holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), CoordError>;

    /// Counts one call against the fixed window of length `window` (aligned to the Unix epoch, so
    /// every instance and the emulator agree on where windows start) of `bucket`, allowing
    /// `limit` per window. `Ok(None)`: counted, go ahead. `Ok(Some(wait))`: the window is full,
    /// nothing was counted, and it reopens in `wait`.
    async fn acquire(
        &self,
        bucket: &str,
        limit: u64,
        window: Duration,
    ) -> Result<Option<Duration>, CoordError>;
}

/// The index of the epoch-aligned window containing now, and the time left in it.
pub fn current_window(window: Duration) -> (u64, Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let window_ms = window.as_millis().max(1);
    let now_ms = now.as_millis();
    let index = now_ms / window_ms;
    let left = window_ms - now_ms % window_ms;
    (
        u64::try_from(index).unwrap_or(u64::MAX),
        Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX)),
    )
}

#[derive(Debug, Default)]
struct MemoryState {
    values: HashMap<String, (String, Instant)>,
    counters: HashMap<String, (u64, u64)>,
}

/// In-process coordination for a single instance: a map with expiry behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryCoordinator {
    state: Mutex<MemoryState>,
}

impl MemoryCoordinator {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState, Instant) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        state.values.retain(|_, (_, until)| *until > now);
        f(&mut state, now)
    }
}

#[async_trait::async_trait]
impl Coordinator for MemoryCoordinator {
    async fn get(&self, key: &str) -> Result<Option<String>, CoordError> {
        Ok(self.with(|s, _| s.values.get(key).map(|(v, _)| v.clone())))
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordError> {
        self.with(|s, now| {
            s.values
                .insert(key.to_owned(), (value.to_owned(), now + ttl));
        });
        Ok(())
    }

    async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CoordError> {
        Ok(self.with(|s, _| {
            if s.values.get(key).is_some_and(|(v, _)| v == value) {
                s.values.remove(key);
                true
            } else {
                false
            }
        }))
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CoordError> {
        Ok(self.with(|s, now| match s.values.get(key) {
            Some((holder, _)) if holder != owner => false,
            _ => {
                s.values
                    .insert(key.to_owned(), (owner.to_owned(), now + ttl));
                true
            }
        }))
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), CoordError> {
        self.delete_if(key, owner).await.map(|_| ())
    }

    async fn acquire(
        &self,
        bucket: &str,
        limit: u64,
        window: Duration,
    ) -> Result<Option<Duration>, CoordError> {
        let (index, left) = current_window(window);
        Ok(self.with(|s, _| {
            let entry = s.counters.entry(bucket.to_owned()).or_insert((index, 0));
            if entry.0 != index {
                *entry = (index, 0);
            }
            if entry.1 >= limit {
                Some(left)
            } else {
                entry.1 += 1;
                None
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locks_are_exclusive_and_renewable() {
        let c = MemoryCoordinator::new();
        let ttl = Duration::from_secs(5);
        assert!(c.try_lock("l", "a", ttl).await.unwrap());
        assert!(!c.try_lock("l", "b", ttl).await.unwrap());
        assert!(c.try_lock("l", "a", ttl).await.unwrap(), "renewal");
        c.unlock("l", "b").await.unwrap();
        assert!(
            !c.try_lock("l", "b", ttl).await.unwrap(),
            "b cannot unlock a's lock"
        );
        c.unlock("l", "a").await.unwrap();
        assert!(c.try_lock("l", "b", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn values_expire_and_delete_only_when_equal() {
        let c = MemoryCoordinator::new();
        c.set("k", "v1", Duration::from_millis(30)).await.unwrap();
        assert!(!c.delete_if("k", "v0").await.unwrap());
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v1"));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(c.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn buckets_refuse_past_the_limit() {
        let c = MemoryCoordinator::new();
        let w = Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(c.acquire("b", 3, w).await.unwrap(), None);
        }
        let wait = c.acquire("b", 3, w).await.unwrap();
        assert!(wait.is_some_and(|d| d <= w));
    }
}
