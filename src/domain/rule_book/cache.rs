//! [`RuleBook`]: the library each corp's messages are scanned with, compiled once and kept.
//!
//! A corp's entry is trusted for [`RECHECK`]; after that the next lookup asks the database for
//! the newest version number only (one primary-key lookup) and compiles the stored source again
//! only when the number moved. So a message costs no query at all within the window, and a save
//! made on another instance is in force everywhere within a few seconds; the instance that saved
//! installs the new library at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::domain::scan::RuleLibrary;
use crate::platform::db::{Db, StoreError};

use super::store;

/// How long a corp's library is used before its newest version number is looked up again.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Each corp's compiled library, falling back to the instance's (`[alerts] rules_file`, or the
/// bundled default) for a corp without one. Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct RuleBook {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    instance: Arc<RuleLibrary>,
    recheck: Duration,
    corps: RwLock<HashMap<String, Entry>>,
    /// One refresh at a time, so a burst of messages after the window asks once, not per message.
    refresh: tokio::sync::Mutex<()>,
    /// Version lookups made (for tests and `/metrics`).
    checks: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    version: Option<i64>,
    library: Arc<RuleLibrary>,
    checked_at: Instant,
}

impl std::fmt::Debug for RuleBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleBook")
            .field("instance_rules", &self.inner.instance.len())
            .field("recheck", &self.inner.recheck)
            .finish_non_exhaustive()
    }
}

impl RuleBook {
    /// The book of `db`'s corps, `instance` for corps without a library of their own.
    pub fn new(db: Db, instance: Arc<RuleLibrary>) -> Self {
        Self::with_recheck(db, instance, RECHECK)
    }

    /// The same, trusting a corp's entry for `recheck` instead of [`RECHECK`].
    pub fn with_recheck(db: Db, instance: Arc<RuleLibrary>, recheck: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                instance,
                recheck,
                corps: RwLock::new(HashMap::new()),
                refresh: tokio::sync::Mutex::new(()),
                checks: AtomicU64::new(0),
            }),
        }
    }

    /// The database the book reads.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The instance's library: what a corp without its own uses.
    pub fn instance(&self) -> &Arc<RuleLibrary> {
        &self.inner.instance
    }

    /// The library to scan the corp's messages with.
    pub async fn lookup(&self, corp_id: &str) -> Result<Arc<RuleLibrary>, StoreError> {
        Ok(self.resolve(corp_id).await?.1)
    }

    /// The corp's library and its version (`None`: the instance's library).
    pub async fn resolve(
        &self,
        corp_id: &str,
    ) -> Result<(Option<i64>, Arc<RuleLibrary>), StoreError> {
        if let Some(e) = self.fresh(corp_id) {
            return Ok((e.version, e.library));
        }
        let _one = self.inner.refresh.lock().await;
        // Another task may have refreshed it while this one waited.
        if let Some(e) = self.fresh(corp_id) {
            return Ok((e.version, e.library));
        }
        self.inner.checks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("scrm_rule_book_checks_total").increment(1);
        let newest = store::newest_version(&self.inner.db, corp_id).await?;
        if let Some(known) = self.entry(corp_id)
            && known.version == newest
        {
            self.install(corp_id, newest, Arc::clone(&known.library));
            return Ok((newest, known.library));
        }
        let library = match newest {
            None => Arc::clone(&self.inner.instance),
            Some(v) => self.compile_stored(corp_id, v).await?,
        };
        self.install(corp_id, newest, Arc::clone(&library));
        Ok((newest, library))
    }

    /// [`RuleBook::resolve`], asking the database for the newest version whatever the window
    /// (for a save, which must compare against what is stored, not what was seen seconds ago).
    pub async fn resolve_now(
        &self,
        corp_id: &str,
    ) -> Result<(Option<i64>, Arc<RuleLibrary>), StoreError> {
        let newest = store::newest_version(&self.inner.db, corp_id).await?;
        if let Some(known) = self.entry(corp_id)
            && known.version == newest
        {
            return Ok((newest, known.library));
        }
        self.forget(corp_id);
        self.resolve(corp_id).await
    }

    /// Compiles stored version `v`. A source that no longer compiles (saved by another release)
    /// falls back to the instance's library, loudly, rather than scanning with nothing.
    async fn compile_stored(&self, corp_id: &str, v: i64) -> Result<Arc<RuleLibrary>, StoreError> {
        let Some(stored) = store::version(&self.inner.db, corp_id, v).await? else {
            return Ok(Arc::clone(&self.inner.instance));
        };
        let compiled =
            tokio::task::spawn_blocking(move || RuleLibrary::from_toml(&stored.source)).await;
        match compiled {
            Ok(Ok(library)) => Ok(Arc::new(library)),
            Ok(Err(e)) => {
                tracing::error!(corp_id, version = v, error = %e, "stored rule library does not compile: scanning with the instance's library");
                Ok(Arc::clone(&self.inner.instance))
            }
            Err(e) => {
                tracing::error!(corp_id, version = v, error = %e, "compiling the rule library failed: scanning with the instance's library");
                Ok(Arc::clone(&self.inner.instance))
            }
        }
    }

    fn entry(&self, corp_id: &str) -> Option<Entry> {
        let corps = self
            .inner
            .corps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        corps.get(corp_id).cloned()
    }

    fn fresh(&self, corp_id: &str) -> Option<Entry> {
        self.entry(corp_id)
            .filter(|e| e.checked_at.elapsed() < self.inner.recheck)
    }

    /// Puts `library` in force for the corp now (this instance saved version `version`, or read
    /// it). Versions only grow: a refresh that read the database just before a save committed
    /// does not replace the saved library with the one before.
    pub(super) fn install(&self, corp_id: &str, version: Option<i64>, library: Arc<RuleLibrary>) {
        let mut corps = self
            .inner
            .corps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if corps.get(corp_id).is_some_and(|old| old.version > version) {
            return;
        }
        corps.insert(
            corp_id.to_owned(),
            Entry {
                version,
                library,
                checked_at: Instant::now(),
            },
        );
    }

    /// Drops what is known of the corp: the next lookup asks the database.
    pub fn forget(&self, corp_id: &str) {
        let mut corps = self
            .inner
            .corps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        corps.remove(corp_id);
    }

    /// How many times the book looked up a corp's newest version.
    pub fn version_checks(&self) -> u64 {
        self.inner.checks.load(Ordering::Relaxed)
    }
}
