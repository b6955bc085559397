//! The coordination contract, run against both implementations: in-process and the real Redis on
//! 127.0.0.1:6379 (a missing Redis fails these tests, naming the address).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use scrm::platform::coord::{LeaderLock, RedisCoordinator};
use wecom_sdk::{Coordinator, MemoryCoordinator};

pub fn redis_url() -> String {
    std::env::var("SCRM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

async fn redis() -> Arc<dyn Coordinator> {
    let url = redis_url();
    Arc::new(RedisCoordinator::connect(&url).await.unwrap_or_else(|e| {
        panic!("Redis is required for the tests and is not reachable at {url}: {e}")
    }))
}

fn memory() -> Arc<dyn Coordinator> {
    Arc::new(MemoryCoordinator::new())
}

fn key(name: &str) -> String {
    format!("scrm:test:{}:{name}", uuid::Uuid::new_v4().simple())
}

macro_rules! both_coordinators {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(super::memory()).await;
            }
            #[tokio::test]
            async fn redis() {
                super::$name(super::redis().await).await;
            }
        }
    )*};
}

both_coordinators!(
    values_expire_and_delete_only_when_unchanged,
    locks_are_exclusive_renewable_and_expire,
    buckets_count_to_their_limit_per_window,
    leader_lock_admits_one_instance,
);

async fn values_expire_and_delete_only_when_unchanged(c: Arc<dyn Coordinator>) {
    let k = key("token");
    assert_eq!(c.get(&k).await.unwrap(), None);
    c.set(&k, "t1", Duration::from_millis(300)).await.unwrap();
    assert_eq!(c.get(&k).await.unwrap().as_deref(), Some("t1"));
    assert!(!c.delete_if(&k, "t0").await.unwrap(), "another value stays");
    assert_eq!(c.get(&k).await.unwrap().as_deref(), Some("t1"));
    assert!(c.delete_if(&k, "t1").await.unwrap());
    assert_eq!(c.get(&k).await.unwrap(), None);
    c.set(&k, "t2", Duration::from_millis(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(c.get(&k).await.unwrap(), None, "expired");
}

async fn locks_are_exclusive_renewable_and_expire(c: Arc<dyn Coordinator>) {
    let k = key("lock");
    let ttl = Duration::from_millis(300);
    assert!(c.try_lock(&k, "a", ttl).await.unwrap());
    assert!(!c.try_lock(&k, "b", ttl).await.unwrap());
    assert!(c.try_lock(&k, "a", ttl).await.unwrap(), "the holder renews");
    c.unlock(&k, "b").await.unwrap();
    assert!(
        !c.try_lock(&k, "b", ttl).await.unwrap(),
        "only the holder unlocks"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        c.try_lock(&k, "b", ttl).await.unwrap(),
        "an expired lock is free"
    );
    c.unlock(&k, "b").await.unwrap();
    assert!(c.try_lock(&k, "a", ttl).await.unwrap());
}

async fn buckets_count_to_their_limit_per_window(c: Arc<dyn Coordinator>) {
    let k = key("bucket");
    let window = Duration::from_secs(3600);
    for _ in 0..5 {
        assert_eq!(c.acquire(&k, 5, window).await.unwrap(), None);
    }
    let wait = c.acquire(&k, 5, window).await.unwrap();
    assert!(
        wait.is_some_and(|w| w > Duration::ZERO && w <= window),
        "{wait:?}"
    );
    // Refusals do not count: still exactly full.
    assert!(c.acquire(&k, 6, window).await.unwrap().is_none());
    assert!(c.acquire(&k, 6, window).await.unwrap().is_some());
}

async fn leader_lock_admits_one_instance(c: Arc<dyn Coordinator>) {
    let name = key("sync");
    let a = LeaderLock::new(c.clone(), &name, "instance-a", Duration::from_secs(5));
    let b = LeaderLock::new(c.clone(), &name, "instance-b", Duration::from_secs(5));
    assert!(a.acquire().await.unwrap());
    assert!(!b.acquire().await.unwrap());
    assert!(a.acquire().await.unwrap(), "renewal");
    a.release().await.unwrap();
    assert!(b.acquire().await.unwrap());
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = RedisCoordinator::connect(&format!("redis://127.0.0.1:{port}/0"))
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
}
