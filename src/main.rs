//! `scrm`: parse the command line, run it, exit with its code.

use clap::Parser as _;

#[tokio::main]
async fn main() {
    // One TLS provider for the whole process (reqwest, sqlx): aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = scrm::cli::Cli::parse();
    let code = match scrm::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("错误 (error): {e:#}");
            2
        }
    };
    std::process::exit(code);
}
