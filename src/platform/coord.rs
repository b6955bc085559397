//! Coordination between instances. One interface ([`wecom_sdk::Coordinator`]), two
//! implementations: in-process ([`wecom_sdk::MemoryCoordinator`], one instance, the default) and
//! Redis ([`RedisCoordinator`], `SCRM_REDIS_URL`, several instances). Redis is never the source of
//! truth: losing it costs a `gettoken` or a scheduler run, never data.
//!
//! Also the leader lock that keeps schedulers (nightly reconciliation, archive pulls) to one
//! instance at a time.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use wecom_sdk::coord::current_window;
use wecom_sdk::{CoordError, Coordinator, MemoryCoordinator};

/// Coordination over one Redis server. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisCoordinator {
    conn: ConnectionManager,
}

impl std::fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisCoordinator")
    }
}

fn coord_err(e: redis::RedisError) -> CoordError {
    CoordError(e.to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

// Compare-and-delete: only the holder of the value may remove it.
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

// Take a free lock, or renew one this owner already holds.
const TRY_LOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

// Count one call in an epoch-aligned window; refuse without counting when full. Returns -1 when
// counted, else the window's remaining milliseconds.
const ACQUIRE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then left = tonumber(ARGV[2]) end
  return left
end
redis.call('INCR', KEYS[1])
if n == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return -1";

impl RedisCoordinator {
    /// Connects to `url` (`redis://127.0.0.1:6379/0`). Fails when the server cannot be reached,
    /// so a misconfigured deployment stops at start instead of running uncoordinated.
    pub async fn connect(url: &str) -> Result<Self, CoordError> {
        let client = redis::Client::open(url).map_err(coord_err)?;
        let conn = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
            .await
            .map_err(|_| {
                CoordError(format!(
                    "no answer from Redis within 5 s ({})",
                    crate::platform::config::redact_url(url)
                ))
            })?
            .map_err(coord_err)?;
        let coord = Self { conn };
        coord.ping().await?;
        Ok(coord)
    }

    /// One round trip.
    pub async fn ping(&self) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(coord_err)
    }
}

#[async_trait::async_trait]
impl Coordinator for RedisCoordinator {
    async fn get(&self, key: &str) -> Result<Option<String>, CoordError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(coord_err)
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ms(ttl))
            .query_async::<()>(&mut conn)
            .await
            .map_err(coord_err)
    }

    async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::Script::new(DELETE_IF)
            .key(key)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(coord_err)?;
        Ok(n > 0)
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::Script::new(TRY_LOCK)
            .key(key)
            .arg(owner)
            .arg(ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(coord_err)?;
        Ok(n == 1)
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
        let key = format!("{bucket}:{index}");
        let mut conn = self.conn.clone();
        let answer: i64 = redis::Script::new(ACQUIRE)
            .key(&key)
            .arg(limit)
            .arg(ms(left))
            .invoke_async(&mut conn)
            .await
            .map_err(coord_err)?;
        Ok((answer >= 0).then(|| Duration::from_millis(answer.unsigned_abs())))
    }
}

/// The coordinator for this configuration: Redis when a URL is given, else in-process.
pub async fn connect(redis_url: Option<&str>) -> Result<Arc<dyn Coordinator>, CoordError> {
    match redis_url {
        Some(url) => Ok(Arc::new(RedisCoordinator::connect(url).await?)),
        None => Ok(Arc::new(MemoryCoordinator::new())),
    }
}

/// A leader lock for one scheduler: `acquire` takes or renews it; only the holder runs the job.
#[derive(Debug, Clone)]
pub struct LeaderLock {
    coord: Arc<dyn Coordinator>,
    key: String,
    owner: String,
    ttl: Duration,
}

impl LeaderLock {
    /// A lock named `scrm:leader:{name}` held by `owner` (this instance's id) for `ttl` at a time.
    pub fn new(coord: Arc<dyn Coordinator>, name: &str, owner: &str, ttl: Duration) -> Self {
        Self {
            coord,
            key: format!("scrm:leader:{name}"),
            owner: owner.to_owned(),
            ttl,
        }
    }

    /// Takes the lock or renews it. `false`: another instance leads.
    pub async fn acquire(&self) -> Result<bool, CoordError> {
        self.coord.try_lock(&self.key, &self.owner, self.ttl).await
    }

    /// Gives the lock up (at the end of a run or on shutdown).
    pub async fn release(&self) -> Result<(), CoordError> {
        self.coord.unlock(&self.key, &self.owner).await
    }
}

/// A process-unique id for leases and locks: host, pid and a random suffix.
pub fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scrm".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
