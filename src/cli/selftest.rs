//! `scrm callback selftest`: plays WeCom against a callback URL and prints what
//! [`crate::app::selftest`] found.

use anyhow::Context as _;
use clap::Args;

use crate::app::selftest::{self, Verdict};
use crate::platform::config::Config;

/// Arguments of `scrm callback selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// The callback URL as entered in the WeCom console, or just the server's base URL
    /// (then `/wecom/callback/{corp}/{app}` is appended).
    #[arg(long)]
    pub url: String,
    /// Corp id, as in the config file.
    #[arg(long)]
    pub corp: String,
    /// App (callback configuration) name, as in the config file.
    #[arg(long)]
    pub app: String,
}

pub async fn run(config: &Config, args: SelftestArgs) -> anyhow::Result<i32> {
    let app = config.app(&args.corp, &args.app).with_context(|| {
        format!(
            "配置中没有企业 {} 的应用 {}：请先在 scrm.toml 的 [[corps]] / [[corps.apps]] 中添加",
            args.corp, args.app
        )
    })?;
    let url = selftest::callback_url(&args.url, &args.corp, &args.app);
    println!("回调自检：{url}");
    let checks = selftest::check_all(&url, &app.crypto, &args.corp)
        .await
        .context("cannot build the HTTP client")?;
    let mut failed = 0;
    for check in &checks {
        let name = check.name;
        match &check.verdict {
            Verdict::Pass(detail) => println!("  ✔ {name}：{detail}"),
            Verdict::Warn(detail) => println!("  ! {name}：{detail}"),
            Verdict::Fail(detail) => {
                failed += 1;
                println!("  ✘ {name}：{detail}");
            }
        }
    }
    if failed == 0 {
        println!("全部通过：可以在企业微信管理后台保存此回调地址。");
        Ok(0)
    } else {
        println!("{failed} 项未通过。");
        Ok(1)
    }
}
