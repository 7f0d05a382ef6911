//! `minion dev start|stop|status`: the embedded dev Postgres.

use clap::Subcommand;

use crate::devdb;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start (creating on first use) the embedded dev Postgres and print its URL.
    Start,
    /// Stop the embedded dev Postgres.
    Stop,
    /// Say whether it runs, and where.
    Status,
}

pub fn run(command: DevCommand) -> anyhow::Result<()> {
    let dir = devdb::default_dir();
    match command {
        DevCommand::Start => {
            let dev = devdb::ensure_running(&dir)?;
            println!(
                "embedded dev Postgres running in {} at {}",
                dev.dir.display(),
                dev.url()
            );
        }
        DevCommand::Stop => {
            if devdb::stop(&dir)? {
                println!("stopped the embedded dev Postgres in {}", dir.display());
            } else {
                println!("no embedded dev Postgres runs in {}", dir.display());
            }
        }
        DevCommand::Status => match devdb::status(&dir)? {
            Some(dev) => println!("running in {} at {}", dev.dir.display(), dev.url()),
            None => println!("not running ({})", dir.display()),
        },
    }
    Ok(())
}
