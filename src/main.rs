//! `scrm`: parse the command line, run it, exit with its code.

use clap::Parser as _;

fn main() {
    // The chat-archive child holds WeCom's library and speaks over its pipes: no runtime, no
    // configuration, nothing else in the process.
    if std::env::args().nth(1).as_deref() == Some("archive-worker") {
        std::process::exit(scrm::app::archive_pull::child::run());
    }
    // One TLS provider for the whole process (reqwest, sqlx): aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = scrm::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("错误 (error): cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match runtime.block_on(scrm::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("错误 (error): {e:#}");
            2
        }
    };
    std::process::exit(code);
}
