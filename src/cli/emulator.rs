//! `scrm emulator`: the WeCom emulator (`wecom_sdk::testkit`) as a process, for trying the server
//! without a WeCom account and for tests of other processes. It serves WeCom's API under
//! `/cgi-bin/` (point `[wecom] api_base_url` at it), pushes signed, encrypted callbacks to our
//! callback URLs, and is driven through `/testkit/` (see the README).

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use wecom_sdk::testkit::{CallbackKind, CallbackTarget, Emulator, EmulatorConfig, SeedSpec};

/// Options of `scrm emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// The emulated corp.
    #[arg(long, default_value = "ww1436e0e65a779aee")]
    pub corp: String,
    /// The app secret gettoken accepts (put the same in the corp's app in scrm.toml).
    #[arg(long, default_value = "emulated-contacts-secret")]
    pub secret: String,
    /// The app's agent id.
    #[arg(long, default_value_t = 1000002)]
    pub agent_id: i64,
    /// Staff members to generate.
    #[arg(long, default_value_t = 20)]
    pub staff: usize,
    /// Customers to generate.
    #[arg(long, default_value_t = 200)]
    pub customers: usize,
    /// Group chats to generate.
    #[arg(long, default_value_t = 10)]
    pub group_chats: usize,
    /// Seed of the generated corp (same seed, same ids).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Our server's base URL (e.g. http://127.0.0.1:8080): customer-contact callbacks go to
    /// `{base}/wecom/callback/{corp}/contacts`.
    #[arg(long)]
    pub callback_base: Option<String>,
    /// Token of the "contacts" callback configuration.
    #[arg(long, requires = "callback_base")]
    pub token: Option<String>,
    /// EncodingAESKey of the "contacts" callback configuration.
    #[arg(long, requires = "callback_base")]
    pub aes_key: Option<String>,
}

/// Runs the emulator until `shutdown` resolves.
pub async fn run(
    args: EmulatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<i32> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let emulator = Emulator::serve(EmulatorConfig::default(), listener)
        .await
        .context("cannot start the emulator")?;
    let state = emulator.state();
    state.add_app(&args.corp, &args.secret, Some(args.agent_id));
    let seeded = state.seed(
        &args.corp,
        &SeedSpec {
            staff: args.staff,
            customers: args.customers,
            group_chats: args.group_chats,
            rng_seed: args.seed,
            ..SeedSpec::default()
        },
    );
    if let (Some(base), Some(token), Some(key)) = (&args.callback_base, &args.token, &args.aes_key)
    {
        let url = format!(
            "{}/wecom/callback/{}/contacts",
            base.trim_end_matches('/'),
            args.corp
        );
        // Checked here, not at the first delivery: a bad key is a start-up error.
        wecom_sdk::CallbackCrypto::new(token, key, &args.corp)
            .context("--token / --aes-key are not a valid WeCom callback configuration")?;
        tracing::info!(%url, "callbacks go to our server");
        state.set_callback_target(
            &args.corp,
            CallbackKind::Contacts,
            CallbackTarget {
                url,
                token: token.clone(),
                encoding_aes_key: key.clone(),
            },
        );
    }
    println!("WeCom emulator on http://{}", emulator.addr());
    println!("  API base:   {}", emulator.base_url());
    println!(
        "  corp {} with {} staff, {} customers, {} group chats",
        args.corp,
        seeded.staff.len(),
        seeded.customers.len(),
        seeded.chats.len()
    );
    println!(
        "  in scrm.toml: [wecom] api_base_url = \"{}\"",
        emulator.base_url()
    );
    println!(
        "  drive it:   curl http://{}/testkit/stats",
        emulator.addr()
    );
    shutdown.await;
    emulator.flush_callbacks().await;
    Ok(0)
}
