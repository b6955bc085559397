//! `scrm demo`: the whole product in one process, for a newcomer. The server runs on an embedded
//! SQLite file in `data/demo`, next to the WeCom emulator playing a seeded corp (a sales team in
//! departments with leaders, thousands of customers with Chinese names, remarks and tags, group
//! chats, an archive of everyday chat). The first run imports the corp with the real full sync
//! and sets up a channel's auto-tagging rule through the API; then a working day is played at a
//! pace a person can follow — every step a WeCom user's action the emulator turns into WeCom's
//! signed, encrypted callbacks or archived messages, or a salesperson's note, reminder or stage
//! sent through our API. Nothing is written into our tables directly.
//!
//! A restart resumes: the database keeps everything, the emulator is seeded again from the same
//! seed and replays (without callbacks) the steps already played, and the day goes on where it
//! stopped. `--fresh` starts over. The one-click sign-ins of `/demo` exist only here, and only on
//! loopback.

mod day;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wecom_sdk::testkit::{
    CallbackKind, CallbackTarget, Emulator, EmulatorConfig, EmulatorState, SeedSpec,
};
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::auth::{self, Role, account};
use crate::domain::settings;
use crate::http::{DemoAccess, DemoPerson};
use crate::platform::config::Config;
use crate::platform::db::{Db, now_ms, private_file};
use crate::platform::{coord, wecom::Wecom};
use crate::startup;
use day::{Cast, Scene, Step};

/// Options of `scrm demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address to serve on: loopback only (the demo's sign-ins need no password).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo keeps its database, keys and settings.
    #[arg(long, default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// Start over: delete the demo's data first.
    #[arg(long)]
    pub fresh: bool,
    /// Pause between two steps of the day, in milliseconds.
    #[arg(long, default_value_t = 2500)]
    pub pace_ms: u64,
    /// Staff of the emulated corp (first run only).
    #[arg(long, default_value_t = 36)]
    pub staff: usize,
    /// Customers of the emulated corp (first run only).
    #[arg(long, default_value_t = 3000)]
    pub customers: usize,
    /// WeCom's chat-archive library or its stand-in (default: `libwework_finance_standin.so`
    /// next to this program, built with `cargo build --release -p wework-finance-standin`).
    #[arg(long)]
    pub archive_library: Option<PathBuf>,
}

/// The emulated corp's id.
const CORP: &str = "wwdemo0000000000001";
/// The contacts app's agent id.
const AGENT_ID: i64 = 1_000_002;
/// The callback configurations: customer contact, directory, chat archive.
const APPS: [(&str, CallbackKind); 3] = [
    ("contacts", CallbackKind::Contacts),
    ("directory", CallbackKind::Directory),
    ("archive", CallbackKind::Archive),
];
/// Settings rows (per corp) that carry the demo across restarts.
const PLAYED: &str = "demo.played";
const SET_UP: &str = "demo.set_up";
/// Everyday archived exchanges before the day starts.
const HISTORY: usize = 150;
/// The console accounts of the demo.
const ADMIN: &str = "demo-admin";
const COMPLIANCE: &str = "demo-compliance";

/// What the first run chose and later runs reuse (`demo.json`, 0600: it holds the secrets).
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    staff: usize,
    customers: usize,
    rng_seed: u64,
    secret: String,
    archive_secret: String,
    /// (app name, token, EncodingAESKey) per callback configuration.
    apps: Vec<(String, String, String)>,
}

impl Saved {
    fn new(args: &DemoArgs) -> Self {
        let mut rng = rand::rng();
        let mut token = || {
            (0..32)
                .map(|_| {
                    char::from(
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                            [rng.random_range(0..62)],
                    )
                })
                .collect::<String>()
        };
        let apps = APPS
            .iter()
            .map(|(name, _)| {
                let key: [u8; 32] = rand::random();
                let key = base64::engine::general_purpose::STANDARD.encode(key);
                (
                    (*name).to_owned(),
                    token(),
                    key.trim_end_matches('=').to_owned(),
                )
            })
            .collect();
        Self {
            staff: args.staff,
            customers: args.customers,
            rng_seed: 2026,
            secret: token(),
            archive_secret: token(),
            apps,
        }
    }

    fn load_or_create(dir: &Path, args: &DemoArgs) -> anyhow::Result<(Self, bool)> {
        let path = dir.join("demo.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is damaged: run with --fresh", path.display()))?,
                true,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let saved = Self::new(args);
                write_private(&path, &serde_json::to_string_pretty(&saved)?)?;
                Ok((saved, false))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = private_file()
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    args: DemoArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<i32> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "scrm demo serves on loopback only (its sign-ins need no password): use --listen 127.0.0.1:PORT"
        );
    }
    if args.fresh {
        wipe(&args.data_dir)?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let (saved, resuming) = Saved::load_or_create(&data_dir, &args)?;
    let library = standin_library(args.archive_library.as_deref());

    // The emulated WeCom and its corp, exactly as the first run had it.
    let emulator = Emulator::serve(
        EmulatorConfig::default(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await
    .context("cannot start the WeCom emulator")?;
    let wecom = emulator.state();
    wecom.add_app(CORP, &saved.secret, Some(AGENT_ID));
    eprintln!(
        "准备模拟企业 (seeding the emulated corp): {} 名员工, {} 位客户…",
        saved.staff, saved.customers
    );
    let seeded = wecom.seed(
        CORP,
        &SeedSpec {
            staff: saved.staff,
            departments: (saved.staff / 6).clamp(2, 8),
            customers: saved.customers,
            follows_per_customer: (1, 2),
            tag_groups: 4,
            tags_per_group: 5,
            group_chats: (saved.customers / 75).clamp(3, 60),
            members_per_chat: (4, 20),
            rng_seed: saved.rng_seed,
        },
    );
    let cast = Cast::pick(&wecom, CORP, &seeded)?;
    let key_file = data_dir.join("archive-key-v1.pem");
    let public_key = archive_key(&key_file)?;
    wecom.set_archive_secret(CORP, &saved.archive_secret);
    wecom
        .add_archive_public_key(CORP, 1, &public_key)
        .context("the archive key")?;
    for action in day::history(&wecom, CORP, &seeded, HISTORY) {
        action.apply(&wecom).map_err(anyhow::Error::msg)?;
    }
    let script = day::script(&wecom, CORP, &cast, &seeded);

    let config = Config::from_toml(
        &config_text(
            &args.listen,
            &data_dir,
            &emulator.addr(),
            &saved,
            &cast,
            library.as_deref(),
            &key_file,
        ),
        &HashMap::new(),
    )
    .context("the demo's configuration")?;
    let db = startup::open_database(&config).await?;
    let corp = CorpId::try_from(CORP).map_err(anyhow::Error::msg)?;
    let played = settings::get(&db, CORP, PLAYED)
        .await?
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(script.len());
    if resuming {
        eprintln!(
            "继续上次的演示 (resuming the demo in {}): 已播放 {played} / {} 步；--fresh 从头开始 (starts over)",
            data_dir.display(),
            script.len()
        );
    }
    // The emulated WeCom catches up with the steps already played (no target: no callbacks).
    for scene in script.iter().take(played) {
        scene
            .step
            .play_in_wecom(&wecom, CORP)
            .map_err(anyhow::Error::msg)?;
    }

    let progress = Arc::new(AtomicUsize::new(played));
    let access = Arc::new(DemoAccess {
        corp_id: corp.clone(),
        admin_account: ADMIN.to_owned(),
        compliance_account: COMPLIANCE.to_owned(),
        manager: person(&cast.manager)?,
        salesperson: person(&cast.salesperson)?,
        customer: (
            ExternalUserId::try_from(cast.customer.as_str()).map_err(anyhow::Error::msg)?,
            wecom
                .customer_name(CORP, &cast.customer)
                .unwrap_or_default(),
        ),
        departing: person(&cast.departing)?,
        size: (saved.staff, saved.customers),
        played: Arc::clone(&progress),
        total: script.len(),
        wecom: Arc::clone(&wecom),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (in use? try --listen 127.0.0.1:8081)",
                args.listen
            )
        })?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(startup::serve_with(
        config.clone(),
        listener,
        async {
            let _ = stop_rx.await;
        },
        Some(Arc::clone(&access)),
    ));
    wait_ready(&base).await?;
    for ((name, token, key), (_, kind)) in saved.apps.iter().zip(APPS) {
        wecom.set_callback_target(
            CORP,
            kind,
            CallbackTarget {
                url: format!("{base}/wecom/callback/{CORP}/{name}"),
                token: token.clone(),
                encoding_aes_key: key.clone(),
            },
        );
    }

    let mut shutdown = std::pin::pin!(shutdown);
    let demo = Demo {
        db: db.clone(),
        wecom: Arc::clone(&wecom),
        corp,
        base: base.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        keys: HashMap::new(),
    };
    let work = async {
        let mut demo = demo;
        if settings::get(&demo.db, CORP, SET_UP).await?.is_none() {
            demo.set_up(&config).await?;
        }
        print_tour(&base, &access, library.is_some());
        demo.play(&script, played, &progress, args.pace_ms).await?;
        settle(&demo.db, &emulator, library.is_some()).await?;
        println!(
            "\n今天的剧情播放完毕，服务继续运行，Ctrl-C 停止 (the day is played; the server keeps running, Ctrl-C stops it): {base}/demo"
        );
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        done = work => done,
        () = &mut shutdown => Ok(()),
    };
    if let Err(e) = &outcome {
        eprintln!("演示中断 (the demo stopped): {e:#}");
    } else {
        shutdown.await;
    }
    let _ = stop_tx.send(());
    server.await.context("the server panicked")??;
    emulator.flush_callbacks().await;
    db.close().await;
    outcome.map(|()| 0)
}

/// Waits (two minutes at most) until what the day set off has landed: WeCom's callbacks
/// delivered, every stored event and outbox item processed, the archive pulled up to WeCom's
/// newest message and every stored message scanned.
async fn settle(
    db: &Db,
    emulator: &wecom_sdk::testkit::EmulatorHandle,
    archive: bool,
) -> anyhow::Result<()> {
    emulator.flush_callbacks().await;
    let newest = i64::try_from(emulator.state().archive_newest_seq(CORP)).unwrap_or(i64::MAX);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let now = now_ms();
        let events = crate::pipeline::worker::stats(db, None).await?;
        let outbox = crate::pipeline::outbox::stats(db, None, now).await?;
        // Stored is not yet scanned: the content alerts come with the scan.
        let pulled = !archive
            || (crate::domain::archive::store::cursor(db, CORP, now)
                .await?
                .seq
                >= newest
                && crate::domain::archive::store::counts(db, CORP)
                    .await?
                    .unscanned
                    == 0);
        if events.pending == 0 && outbox.pending == 0 && pulled {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the day's work did not settle in 2 minutes: {} events and {} outbox items pending, archive {}",
                events.pending,
                outbox.pending,
                if pulled { "pulled" } else { "behind" }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn person(m: &day::Member) -> anyhow::Result<DemoPerson> {
    Ok(DemoPerson {
        user_id: UserId::try_from(m.id.as_str()).map_err(anyhow::Error::msg)?,
        name: m.name.clone(),
    })
}

/// Deletes the demo's folder, refusing one that is not a demo's.
fn wipe(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join("demo.json").exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!(
            "--fresh: {} is not a demo's folder (no demo.json); not deleting it",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot delete {}", dir.display()))
}

/// The corp's archive key pair: the private key in `file` (made on the first run), the public
/// key returned for the emulator.
fn archive_key(file: &Path) -> anyhow::Result<String> {
    let public = file.with_extension("pub.pem");
    if let (Ok(_), Ok(text)) = (std::fs::metadata(file), std::fs::read_to_string(&public)) {
        return Ok(text);
    }
    let (private_pem, public_pem) =
        wecom_sdk::archive::keys::generate_pem_pair().context("cannot make the archive key")?;
    write_private(file, &private_pem)?;
    std::fs::write(&public, &public_pem)?;
    Ok(public_pem)
}

/// The stand-in for WeCom's chat-archive library, as `cargo build -p wework-finance-standin` names it.
const STANDIN: &str = "libwework_finance_standin.so";

/// The chat-archive library: the one given, else the stand-in next to this program — built
/// once when this program runs under `cargo run` (the README's first command) and it is
/// missing. `None`: the demo runs without the archive, and says so.
fn standin_library(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let lib = dir.join(STANDIN);
    if lib.exists() {
        return Some(lib);
    }
    let cargo = std::env::var_os("CARGO")?;
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    eprintln!(
        "构建会话存档模拟库，仅首次 (building the chat-archive stand-in library, first run only): cargo build{} -p wework-finance-standin",
        if release { " --release" } else { "" }
    );
    let mut build = std::process::Command::new(cargo);
    build.arg("build").current_dir(manifest);
    if release {
        build.arg("--release");
    }
    let built = build
        .args(["-p", "wework-finance-standin"])
        .status()
        .is_ok_and(|s| s.success());
    (built && lib.exists()).then_some(lib)
}

/// The demo's configuration: everything pointed at the emulator, the archive on when the
/// library is there.
fn config_text(
    listen: &SocketAddr,
    data_dir: &Path,
    emulator: &SocketAddr,
    saved: &Saved,
    cast: &Cast,
    library: Option<&Path>,
    key_file: &Path,
) -> String {
    // A JSON string is a TOML basic string.
    let toml_str = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let emu = format!("http://{emulator}");
    let mut text = format!(
        "listen = {listen}\ndata_dir = {data}\n\
         [wecom]\napi_base_url = {api}\n\
         [sync]\nenabled = false\n\
         [sidebar]\npublic_url = {public}\noauth_authorize_url = {oauth}\njssdk_script_url = {js}\n\
         [console]\nsso_login_url = {sso}\n\
         [alerts]\nconsole_url = {public}\n",
        listen = toml_str(&listen.to_string()),
        data = toml_str(&data_dir.to_string_lossy()),
        api = toml_str(&format!("{emu}/cgi-bin/")),
        public = toml_str(&format!("http://{listen}")),
        oauth = toml_str(&format!("{emu}/connect/oauth2/authorize")),
        js = toml_str(&format!("{emu}/jweixin.js")),
        sso = toml_str(&format!("{emu}/wwlogin/sso/login")),
    );
    if let Some(library) = library {
        text.push_str(&format!(
            "[archive]\nlibrary = {}\npoll_interval_secs = 5\n[archive.worker_env]\nWEWORK_FINANCE_STANDIN_URL = {}\n",
            toml_str(&library.to_string_lossy()),
            toml_str(&emu),
        ));
    }
    text.push_str(&format!(
        "[[corps]]\ncorp_id = {corp}\napi_app = \"contacts\"\nmessage_app = \"contacts\"\n\
         alert_recipients = [{manager}]\nadmin_recipients = [{manager}]\n",
        corp = toml_str(CORP),
        manager = toml_str(&cast.manager.id),
    ));
    if library.is_some() {
        text.push_str(&format!(
            "[corps.archive]\nsecret = {}\nkeys = [{{ version = 1, file = {} }}]\n",
            toml_str(&saved.archive_secret),
            toml_str(&key_file.to_string_lossy()),
        ));
    }
    for (name, token, key) in &saved.apps {
        text.push_str(&format!(
            "[[corps.apps]]\nname = {}\ntoken = {}\nencoding_aes_key = {}\n",
            toml_str(name),
            toml_str(token),
            toml_str(key),
        ));
        if name == "contacts" {
            text.push_str(&format!(
                "secret = {}\nagent_id = {AGENT_ID}\n",
                toml_str(&saved.secret)
            ));
        }
    }
    text
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the server at {base} did not become ready in 10 s")
}

fn print_tour(base: &str, access: &DemoAccess, archive: bool) {
    println!("\n企微 SCRM 演示已启动 (the scrm demo is up)");
    println!("  开始页 (start page):      {base}/demo");
    println!("  控制台 (console):         {base}/console");
    println!("  一键登录 (one-click sign-in, demo mode on loopback only):");
    println!("    管理员 admin:           {base}/demo/login/admin");
    println!("    合规 compliance:        {base}/demo/login/compliance");
    println!(
        "    主管 manager {}:  {base}/demo/login/manager",
        access.manager.name
    );
    println!(
        "    销售 salesperson {} (sidebar):  {base}/demo/login/sales",
        access.salesperson.name
    );
    if !archive {
        println!(
            "  会话存档未开启 (chat archive off): build the stand-in with `cargo build --release -p wework-finance-standin` and start again"
        );
    }
    println!("\n导览 (tour):");
    for (i, (zh, en)) in access.tour().iter().enumerate() {
        println!("  {}. {zh}\n     {en}", i + 1);
    }
    println!();
}

/// The demo's hands: the database (for its own settings and keys), the emulated WeCom, and our
/// HTTP API as a salesperson or an admin would call it.
struct Demo {
    db: Db,
    wecom: Arc<EmulatorState>,
    corp: CorpId,
    base: String,
    http: reqwest::Client,
    /// API keys made this run, by staff member (`""` for the admin's).
    keys: HashMap<String, String>,
}

impl Demo {
    /// The first run: console accounts, the corp imported by the full sync (with a progress
    /// bar), the channel's tag and its auto-tagging rule.
    async fn set_up(&mut self, config: &Config) -> anyhow::Result<()> {
        let now = now_ms();
        for (name, role) in [(ADMIN, Role::Admin), (COMPLIANCE, Role::Compliance)] {
            if account::get(&self.db, name).await?.is_none() {
                // Nobody types it: the demo's sign-in is one click on loopback.
                let password: String = format!("Demo-{:032x}", rand::random::<u128>());
                account::create(&self.db, &self.corp, name, &password, role, "demo", now)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot create the account {name}: {e}"))?;
            }
        }
        let wecom = Wecom::new(config, coord::connect(None).await?)?;
        let bar = super::sync::progress_bar(false);
        bar.set_message("导入企业 (importing the corp: full sync)");
        let report = |p: &crate::app::sync::SyncProgress| {
            bar.set_length(u64::try_from(p.total).unwrap_or(1));
            bar.set_position(u64::try_from(p.done).unwrap_or(0));
            bar.set_message(format!(
                "导入企业 (full sync) {}: {} relations, {} chats",
                p.phase, p.summary.relations_seen, p.summary.chats_seen
            ));
        };
        let owner = coord::instance_id();
        let (_, summary) =
            crate::app::sync::run(&self.db, &wecom, &self.corp, &owner, None, &report)
                .await
                .context("the first full sync")?;
        bar.finish_and_clear();
        eprintln!(
            "已导入 (imported): {} 名员工, {} 条客户关系, {} 个客户群, {} 次企业微信接口调用",
            summary.follow_users, summary.relations_seen, summary.chats_seen, summary.api_calls
        );
        // An admin creates the channel's tag in WeCom; its callback brings it to us.
        let answer = wecom_sdk::testkit::admin::Action::CreateTag {
            corp_id: CORP.to_owned(),
            group: day::CHANNEL_TAG.0.to_owned(),
            name: day::CHANNEL_TAG.1.to_owned(),
        }
        .apply(&self.wecom)
        .map_err(anyhow::Error::msg)?;
        let tag_id = answer["tag_id"].as_str().unwrap_or_default().to_owned();
        self.api(
            "",
            reqwest::Method::POST,
            "/auto-tag-rules",
            json!({
                "name": "秋季展会活码",
                "trigger": "channel",
                "patterns": [day::CHANNEL],
                "corp_tag_ids": [tag_id],
            }),
        )
        .await
        .context("the channel's auto-tagging rule")?;
        settings::set(&self.db, CORP, SET_UP, "1", "demo", now_ms()).await?;
        Ok(())
    }

    /// Plays the day from step `from`, recording each step played.
    async fn play(
        &mut self,
        script: &[Scene],
        from: usize,
        progress: &AtomicUsize,
        pace_ms: u64,
    ) -> anyhow::Result<()> {
        for (i, scene) in script.iter().enumerate().skip(from) {
            println!(
                "[{}] ({}/{}) {}\n        {}",
                scene.at,
                i + 1,
                script.len(),
                scene.zh,
                scene.en
            );
            self.play_step(&scene.step).await?;
            settings::set(
                &self.db,
                CORP,
                PLAYED,
                &(i + 1).to_string(),
                "demo",
                now_ms(),
            )
            .await?;
            progress.store(i + 1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(pace_ms)).await;
        }
        Ok(())
    }

    async fn play_step(&mut self, step: &Step) -> anyhow::Result<()> {
        let path = |ext: &str, tail: &str| format!("/customers/{ext}/{tail}");
        match step {
            Step::Wecom(_) | Step::AddCustomer { .. } => step
                .play_in_wecom(&self.wecom, CORP)
                .map_err(anyhow::Error::msg),
            Step::Note {
                userid,
                external_userid,
                body,
            } => {
                self.api(
                    userid,
                    reqwest::Method::POST,
                    &path(external_userid, "notes"),
                    json!({ "body": body }),
                )
                .await
            }
            Step::Remind {
                userid,
                external_userid,
                title,
                days,
            } => {
                self.api(
                    userid,
                    reqwest::Method::POST,
                    &path(external_userid, "reminders"),
                    json!({ "title": title, "due_at_ms": now_ms() + days * 86_400_000 }),
                )
                .await
            }
            Step::Stage {
                userid,
                external_userid,
                stage,
            } => {
                self.api(
                    userid,
                    reqwest::Method::PUT,
                    &path(external_userid, "stage"),
                    json!({ "stage": stage }),
                )
                .await
            }
        }
    }

    /// One call of our API as `staff` (a salesperson's key) or the admin (`""`). A customer
    /// the pipeline has not stored yet (404/403) or a tag it has not learnt yet (400) is asked
    /// again for up to 20 s: the step's callback is on its way.
    async fn api(
        &mut self,
        staff: &str,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<()> {
        let key = match self.keys.get(staff) {
            Some(key) => key.clone(),
            None => {
                let user = (!staff.is_empty())
                    .then(|| UserId::try_from(staff))
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                let role = if user.is_some() {
                    Role::Sales
                } else {
                    Role::Admin
                };
                let (_, key) =
                    auth::create_key(&self.db, &self.corp, role, user.as_ref(), "demo", now_ms())
                        .await?;
                self.keys.insert(staff.to_owned(), key.clone());
                key
            }
        };
        let url = format!("{}/api/v1{path}", self.base);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let response = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let text = response.text().await.unwrap_or_default();
            let waiting = matches!(status.as_u16(), 400 | 403 | 404 | 409);
            if !waiting || tokio::time::Instant::now() > deadline {
                anyhow::bail!("{method} {path}: {status} {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
