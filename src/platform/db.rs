//! Storage: one schema on two backends. SQLite is the embedded default (one file, WAL,
//! `synchronous=FULL`); PostgreSQL serves several instances. Domain modules own their SQL and run it
//! on whichever pool we hold through [`on_db!`], so both keep native types.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A database handle: the embedded SQLite file or a PostgreSQL server.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite: one file, one process.
    Sqlite(SqlitePool),
    /// PostgreSQL: production, many instances.
    Postgres(PgPool),
}

/// Runs one body on whichever typed pool `$db` holds.
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::platform::db::Db::Sqlite($pool) => $body,
            $crate::platform::db::Db::Postgres($pool) => $body,
        }
    };
}

/// A transaction on whichever backend: domain functions that change our tables *and* enqueue an
/// outbox intent do both inside one (`Db::begin`, then [`on_tx!`], then [`Tx::commit`]). On
/// SQLite it is `BEGIN IMMEDIATE`: it takes the write lock up front, so a read-then-write inside
/// it never fails halfway with "database is locked".
#[derive(Debug)]
pub enum Tx {
    /// SQLite, with this process's turn to write the file (see [`Db::write_turn`]).
    Sqlite(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        tokio::sync::OwnedSemaphorePermit,
    ),
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs one body on whichever connection a [`Tx`] holds: `$conn` is `&mut` to the connection
/// (use it as `&mut *$conn`).
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::platform::db::Tx::Sqlite(t, _) => {
                let $conn = &mut **t;
                $body
            }
            $crate::platform::db::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(t, _turn) => t.commit().await?,
            Self::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Rolls back (dropping a `Tx` does the same, later; this says so and frees the connection now).
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(t, _turn) => t.rollback().await?,
            Self::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }

    /// `true` on PostgreSQL (where a read that a write depends on needs `FOR UPDATE`).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// What can go wrong in a store function, mapped once from `sqlx::Error`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now (connection refused, pool timed out, I/O).
    /// Callers answer 503 so that WeCom retries.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// No row matched.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the row.
    #[error("conflict")]
    Conflict(#[source] sqlx::Error),
    /// Anything else.
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl StoreError {
    /// True when retrying later may succeed (the database is down or overloaded).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(e),
            sqlx::Error::Database(db) if is_refusal_code(db.code().as_deref()) => Self::Other(e),
            // Everything else a database says (connection refused or dropped, shutting down, too
            // many connections, busy, disk full…) may pass: callers answer 503 and WeCom retries.
            sqlx::Error::Database(_)
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(e),
            _ => Self::Other(e),
        }
    }
}

/// Database error codes that refuse *this* statement or row, so retrying it cannot help: SQLite
/// SQL error, constraint, type mismatch, too big, range; PostgreSQL data exceptions (22),
/// integrity constraints (23) and syntax or access errors (42).
fn is_refusal_code(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    matches!(code, "1" | "18" | "19" | "20" | "25")
        || code.starts_with("22")
        || code.starts_with("23")
        || code.starts_with("42")
        // SQLite extended constraint codes (19 + n·256).
        || code.parse::<u32>().is_ok_and(|c| c & 0xff == 19)
}

/// The longest a SQLite writer waits for its turn, as long as SQLite's own busy timeout.
const WRITE_TURN_TIMEOUT: Duration = Duration::from_secs(5);

/// This process's writers of one SQLite file (the inbox writer, the workers, the API) take turns
/// here before they take SQLite's write lock. Without it, a writer finding the lock held polls
/// for it in SQLite's busy handler, sleeping 1, 2, 5, 10, 15, 20 ms… between tries: a callback
/// whose commit waited behind a worker's transaction took tens of milliseconds more. Turns are
/// handed out in order, the moment the previous writer is done.
pub async fn sqlite_write_turn(
    pool: &SqlitePool,
) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
    static TURNS: std::sync::LazyLock<
        std::sync::Mutex<
            std::collections::HashMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Semaphore>>,
        >,
    > = std::sync::LazyLock::new(Default::default);
    let file = pool.connect_options().get_filename().to_path_buf();
    let turns = {
        let mut all = TURNS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::sync::Arc::clone(
            all.entry(file)
                .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1))),
        )
    };
    match tokio::time::timeout(WRITE_TURN_TIMEOUT, turns.acquire_owned()).await {
        Ok(Ok(turn)) => Ok(turn),
        _ => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
    }
}

/// A PostgreSQL connection idle longer than this is pinged before it is handed out (one that the
/// server or a firewall dropped meanwhile is replaced, not failed on).
const PING_IDLE_AFTER: Duration = Duration::from_secs(30);

/// Our pool settings for SQLite. No ping before each use (sqlx's default): the file cannot hang up,
/// and each ping is one more hop to the connection's thread.
fn sqlite_pool(max: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
}

/// Our pool settings for PostgreSQL: a connection in steady use is handed out without the ping
/// sqlx would send first (one round trip more per statement outside a transaction); one idle for
/// [`PING_IDLE_AFTER`] is pinged.
fn pg_pool(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_IDLE_AFTER {
                    return Ok(true);
                }
                sqlx::Connection::ping(conn).await.map(|()| true)
            })
        })
}

impl Db {
    /// Opens the database named by `url` (`sqlite://path` or `postgres://…`). A SQLite file and its
    /// folder are created when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(StoreError::Other)?;
            let pool = pg_pool(16).connect_with(options).await?;
            return Ok(Self::Postgres(pool));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Other)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // We answer WeCom only once the commit is on disk: FULL, never NORMAL.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Keep the inbox's indexes and recent pages in memory (16 MiB; SQLite's default is
            // 2 MiB).
            .pragma("cache_size", "-16384")
            // A multi-row INSERT inside a transaction keeps a statement journal: in memory, not a
            // temp file.
            .pragma("temp_store", "memory")
            // Checkpoint every ~40 MiB of WAL instead of 4 MiB: pages rewritten by many commits (the
            // right edge of each index) are copied back once per checkpoint, not once per 4 MiB.
            .pragma("wal_autocheckpoint", "10000");
        let io = |e| StoreError::Unavailable(sqlx::Error::Io(e));
        let file = options.get_filename();
        if let Some(parent) = file.parent()
            && !parent.as_os_str().is_empty()
        {
            create_private_dir(parent).map_err(io)?;
        }
        // Customer data: readable by this user only (SQLite gives the -wal and -shm files the
        // database file's mode).
        if file != std::path::Path::new(":memory:") && !file.exists() {
            private_file().write(true).open(file).map_err(io)?;
        }
        let pool = sqlite_pool(4).connect_with(options).await?;
        Ok(Self::Sqlite(pool))
    }

    /// A handle for a long-lived writer. SQLite: one dedicated connection, so its page cache stays
    /// warm (each pooled connection has its own cache, and a write through one flushes the others')
    /// and writes never wait on each other inside the process. PostgreSQL: the shared pool.
    pub async fn dedicated_writer(&self) -> Result<Self, StoreError> {
        match self {
            Self::Sqlite(pool) => {
                let options = (*pool.connect_options()).clone();
                let writer = sqlite_pool(1)
                    .min_connections(1)
                    .connect_with(options)
                    .await?;
                Ok(Self::Sqlite(writer))
            }
            Self::Postgres(_) => Ok(self.clone()),
        }
    }

    /// A handle for the workers (inbox events, outbox deliveries): their commits do not wait for
    /// the disk. SQLite: a pool of its own with `synchronous=NORMAL` (in WAL mode a commit is in
    /// the log, safe from a crash of this process, and reaches the disk with the next checkpoint or
    /// the next `FULL` commit of any connection, such as the inbox writer's); PostgreSQL:
    /// `synchronous_commit = off` for its sessions.
    ///
    /// Why that keeps every guarantee: a workers' commit lost to a power cut is lost together with
    /// everything committed after it (both backends recover a prefix of their log), and the
    /// callback, or the intent, it came from was committed durably before it. So what a lost commit
    /// did is simply done again, by a worker claiming the row once more (handlers are idempotent);
    /// callbacks acknowledged to WeCom and edits acknowledged to a user are never among the losses.
    pub async fn for_workers(&self) -> Result<Self, StoreError> {
        match self {
            Self::Sqlite(pool) => {
                let options = (*pool.connect_options())
                    .clone()
                    .synchronous(SqliteSynchronous::Normal);
                let workers = sqlite_pool(1).connect_with(options).await?;
                Ok(Self::Sqlite(workers))
            }
            Self::Postgres(pool) => {
                let options = (*pool.connect_options())
                    .clone()
                    .options([("synchronous_commit", "off")]);
                let workers = pg_pool(8).connect_with(options).await?;
                Ok(Self::Postgres(workers))
            }
        }
    }

    /// The SQLite URL for the default database file inside `data_dir`.
    pub fn default_sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("scrm.db").display())
    }

    /// Applies this release's migrations. A schema migrated by a newer release (a rolling
    /// upgrade, or a rollback) is fine as long as none of the migrations this binary does not
    /// know is marked breaking (`NNNN_breaking_….sql`: it changes what older binaries read or
    /// write): those are skipped, the rest applied as usual. Otherwise the start is refused,
    /// naming the migration. See docs/operations.md, "Upgrades".
    pub async fn migrate(&self) -> Result<(), MigrationError> {
        let mut migrator = match self {
            Self::Sqlite(_) => sqlx::migrate!("./migrations/sqlite"),
            Self::Postgres(_) => sqlx::migrate!("./migrations/postgres"),
        };
        let known: std::collections::HashSet<i64> = migrator.iter().map(|m| m.version).collect();
        for (version, description) in self.applied_migrations().await? {
            if !known.contains(&version) && is_breaking(&description) {
                return Err(MigrationError::TooNew {
                    version,
                    description,
                });
            }
        }
        migrator.set_ignore_missing(true);
        match self {
            Self::Sqlite(pool) => migrator.run(pool).await?,
            Self::Postgres(pool) => migrator.run(pool).await?,
        }
        Ok(())
    }

    /// The migrations applied to this database (none before the first).
    async fn applied_migrations(&self) -> Result<Vec<(i64, String)>, MigrationError> {
        const EXISTS_SQLITE: &str =
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";
        const EXISTS_PG: &str = "SELECT COUNT(*) FROM information_schema.tables \
            WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'";
        const APPLIED: &str = "SELECT version, description FROM _sqlx_migrations WHERE success";
        let exists: i64 = match self {
            Self::Sqlite(pool) => sqlx::query_scalar(EXISTS_SQLITE).fetch_one(pool).await,
            Self::Postgres(pool) => sqlx::query_scalar(EXISTS_PG).fetch_one(pool).await,
        }
        .map_err(StoreError::from)?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let applied = on_db!(self, |pool| sqlx::query_as(APPLIED).fetch_all(pool).await)
            .map_err(StoreError::from)?;
        Ok(applied)
    }

    /// Refreshes the planner's statistics of `tables` (PostgreSQL's `ANALYZE`; SQLite plans by
    /// its indexes without them). A table filled from empty in one go — a corp's first sync —
    /// otherwise keeps the plans made while it was empty: the search index's trigger then scans
    /// every relation for each one it adds.
    pub async fn refresh_statistics(&self, tables: &[&str]) -> Result<(), StoreError> {
        let Self::Postgres(pool) = self else {
            return Ok(());
        };
        if tables.is_empty() {
            return Ok(());
        }
        let sql = format!("ANALYZE {}", tables.join(", "));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
        Ok(())
    }

    /// SQLite: this process's turn to write the file, for a statement written outside a [`Tx`]
    /// (a `Tx` takes its own); hold it until the statement is done. PostgreSQL: `None`, its
    /// writers do not take turns.
    pub async fn write_turn(
        &self,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, StoreError> {
        match self {
            Self::Sqlite(pool) => Ok(Some(sqlite_write_turn(pool).await?)),
            Self::Postgres(_) => Ok(None),
        }
    }

    /// Starts a transaction (see [`Tx`]).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Self::Sqlite(pool) => {
                let turn = sqlite_write_turn(pool).await?;
                Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?, turn)
            }
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// One round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_db!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// An online backup of a SQLite database into `path` (`VACUUM INTO`: one consistent, compacted
    /// file with the WAL's content, while others keep writing), created `0600`; `path` must not
    /// exist. PostgreSQL is backed up with `pg_dump` (docs/operations.md): `Unsupported`.
    pub async fn backup_into(&self, path: &std::path::Path) -> Result<u64, BackupError> {
        let Self::Sqlite(pool) = self else {
            return Err(BackupError::Unsupported);
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(BackupError::Io)?;
        }
        // SQLite writes into an empty file: create it first, private, and never over another.
        private_file()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(BackupError::Io)?;
        let target = path.to_string_lossy().into_owned();
        if let Err(e) = sqlx::query("VACUUM INTO ?")
            .bind(&target)
            .execute(pool)
            .await
        {
            let _ = std::fs::remove_file(path);
            return Err(BackupError::Store(e.into()));
        }
        Ok(std::fs::metadata(path).map_err(BackupError::Io)?.len())
    }

    /// The backend's name, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection (SQLite checkpoints its WAL on the last close).
    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await);
    }
}

/// The same PostgreSQL URL naming another database (`…/old?opts` → `…/name?opts`).
pub fn with_database_name(url: &str, name: &str) -> String {
    let (path, query) = url
        .split_once('?')
        .map_or((url, None), |(p, q)| (p, Some(q)));
    let after_scheme = path.find("://").map_or(0, |i| i + 3);
    let base = match path[after_scheme..].rfind('/') {
        Some(i) => &path[..after_scheme + i],
        None => path,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Creates `path` and its missing parents as folders only this user can enter (0700 on Unix).
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Options that create a file only this user can read (0600 on Unix); add `write`/`append`.
pub fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// `$start, $start+1, …` for `n` values (an `IN (…)` list).
pub fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `LIKE … ESCAPE '\'` pattern matching `text` anywhere, lower-cased: `%`, `_` and `\` in the
/// text match themselves. Compare it with `LOWER(column)` so both backends agree on case (SQLite's
/// LIKE ignores ASCII case, PostgreSQL's does not).
pub fn like_contains(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A subquery reading the rows of a JSON array of objects bound at `$n` (many rows in one
/// statement with one bind, on both backends): `columns` are the objects' keys, each with its
/// PostgreSQL type; the subquery's columns are named after the keys.
pub fn json_rows(postgres: bool, n: usize, columns: &[(&str, &str)]) -> String {
    let list = |f: &dyn Fn(&str, &str) -> String| {
        columns
            .iter()
            .map(|(name, kind)| f(name, kind))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if postgres {
        format!(
            "(SELECT {} FROM jsonb_to_recordset(${n}::jsonb) AS j({}))",
            list(&|name, _| name.to_owned()),
            list(&|name, kind| format!("{name} {kind}"))
        )
    } else {
        format!(
            "(SELECT {} FROM json_each(${n}))",
            list(&|name, _| format!("value ->> '{name}' AS {name}"))
        )
    }
}

/// A subquery listing the strings of a JSON array bound at `$n` (`IN (…)` over a list of any
/// length with one bind, on both backends): bind [`json_list`]'s text there; `NULL` lists nothing.
pub fn in_json_list(db: &Db, n: usize) -> String {
    match db {
        Db::Postgres(_) => format!("(SELECT jsonb_array_elements_text(${n}::jsonb))"),
        Db::Sqlite(_) => format!("(SELECT value FROM json_each(${n}))"),
    }
}

/// `items` as the JSON array [`in_json_list`] reads.
pub fn json_list<S: AsRef<str>>(items: &[S]) -> String {
    serde_json::Value::Array(
        items
            .iter()
            .map(|s| serde_json::Value::String(s.as_ref().to_owned()))
            .collect(),
    )
    .to_string()
}

/// Milliseconds since the Unix epoch, the unit every `_ms` column uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod like_tests {
    #[test]
    fn like_patterns_escape_wildcards_and_lower_case() {
        assert_eq!(super::like_contains("Ab%_c\\"), "%ab\\%\\_c\\\\%");
        assert_eq!(super::like_contains("张三"), "%张三%");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn names(backend: &str) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let sqlite = names("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, names("postgres"));
    }

    #[test]
    fn database_name_is_replaced_keeping_options() {
        use super::with_database_name as w;
        assert_eq!(
            w("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            w("postgres://u@h/postgres?host=/run/pg", "x"),
            "postgres://u@h/x?host=/run/pg"
        );
        assert_eq!(w("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[test]
    fn refusals_are_told_from_outages() {
        assert!(super::is_refusal_code(Some("23505")), "unique violation");
        assert!(super::is_refusal_code(Some("22021")), "bad byte sequence");
        assert!(
            super::is_refusal_code(Some("2067")),
            "SQLITE_CONSTRAINT_UNIQUE"
        );
        assert!(!super::is_refusal_code(Some("5")), "SQLITE_BUSY may pass");
        assert!(
            !super::is_refusal_code(Some("57P01")),
            "admin shutdown may pass"
        );
        assert!(
            !super::is_refusal_code(Some("55000")),
            "not accepting connections may pass"
        );
        assert!(!super::is_refusal_code(None));
    }
}

/// A migration's description (from its file name) says it breaks older binaries.
fn is_breaking(description: &str) -> bool {
    description.split_whitespace().next() == Some("breaking")
}

/// Why [`Db::migrate`] did not bring the schema to this release.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A newer release applied a migration this binary cannot live with.
    #[error(
        "the database was migrated by a newer release (migration {version} \"{description}\" changes what \
         this version reads or writes): run that release or a newer one (docs/operations.md, Upgrades)"
    )]
    TooNew {
        /// The migration's version.
        version: i64,
        /// Its description.
        description: String,
    },
    /// sqlx's migrator failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Reading the applied migrations failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`Db::backup_into`] did not write a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// PostgreSQL: back it up with `pg_dump`.
    #[error("PostgreSQL is backed up with pg_dump -Fc (see docs/operations.md), not by scrm")]
    Unsupported,
    /// The file (it exists already, or cannot be written).
    #[error("the backup file: {0}")]
    Io(std::io::Error),
    /// The database refused.
    #[error(transparent)]
    Store(StoreError),
}
