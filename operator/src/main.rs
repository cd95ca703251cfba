//! `couponrush-operator`: parse the configuration, start logging, run until SIGTERM.

use clap::Parser;
use couponrush_core::{ops, shutdown, telemetry};
use couponrush_operator::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.log_json);
    let listener = ops::bind(config.listen).await?;
    Ok(couponrush_operator::run(config, listener, shutdown::on_signal()).await?)
}
