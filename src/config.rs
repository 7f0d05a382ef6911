//! Settings: flags > environment > `minion.toml` > defaults.
//!
//! clap resolves flags and environment variables; whatever is still unset is taken from the config
//! file (`--config`, `MINION_CONFIG`, or `./minion.toml` when it exists), then from defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Default object store: a local directory under the working directory.
pub const DEFAULT_STORE: &str = "./minion-data";

/// The config file's fields. Every field is optional; unknown fields are refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub store: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub staging_dir: Option<PathBuf>,
    #[serde(default)]
    pub prebuild: PrebuildFileConfig,
}

/// `[prebuild]` in minion.toml.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrebuildFileConfig {
    /// RocksDB table format_version of key-metadata SST files (default 5: readable by RocksDB 6/7).
    pub sst_format_version: Option<i32>,
    /// Key-run entries sorted in memory before spilling to disk.
    pub max_run_entries: Option<usize>,
    /// Entries per SST file.
    pub sst_max_entries: Option<u64>,
    /// Most key ranges a resolution is split into (default 8).
    pub max_key_ranges: Option<usize>,
    /// Run entries per key range (default 1,000,000).
    pub entries_per_key_range: Option<u64>,
    /// Threads resolving key ranges at once (default: the machine's cores).
    pub resolve_threads: Option<usize>,
    /// Most key-metadata layers a snapshot may have (default 4). 1 never layers: every manifest
    /// stays format 1, for servers whose loader predates layers.
    pub max_key_layers: Option<std::num::NonZeroU32>,
}

impl PrebuildFileConfig {
    /// The prebuild options: what the file sets, defaults for the rest.
    fn over_defaults(&self, staging_dir: PathBuf) -> crate::snapshot::PrebuildOptions {
        let defaults = crate::snapshot::PrebuildOptions::default();
        crate::snapshot::PrebuildOptions {
            staging_dir,
            max_run_entries: self.max_run_entries.unwrap_or(defaults.max_run_entries),
            sst_format_version: self
                .sst_format_version
                .unwrap_or(defaults.sst_format_version),
            sst_max_entries: self.sst_max_entries.unwrap_or(defaults.sst_max_entries),
            max_key_ranges: self.max_key_ranges.unwrap_or(defaults.max_key_ranges),
            entries_per_key_range: self
                .entries_per_key_range
                .unwrap_or(defaults.entries_per_key_range),
            resolve_threads: self.resolve_threads.unwrap_or(defaults.resolve_threads),
            max_key_layers: self
                .max_key_layers
                .map_or(defaults.max_key_layers, |n| n.get()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Global options as given on the command line or in the environment.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Postgres URL of the catalog. Unset: an embedded dev cluster under ./.minion/postgres.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Object store URL: file:///abs/path, a directory path, s3://bucket/prefix, memory://.
    #[arg(long, env = "MINION_STORE", global = true)]
    pub store: Option<String>,
    /// Config file (TOML). Default: ./minion.toml when it exists.
    #[arg(long, env = "MINION_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log output format on stderr.
    #[arg(long, env = "MINION_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `upsert_minion=debug`.
    #[arg(long, env = "MINION_LOG", global = true)]
    pub log_level: Option<String>,
    /// Local directory for staging files; each process works in its own subdirectory of
    /// `minion-staging/` there. Default: the system temp dir.
    #[arg(long, env = "MINION_STAGING_DIR", global = true)]
    pub staging_dir: Option<PathBuf>,
}

/// Where the catalog lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSetting {
    Url(String),
    /// No URL anywhere: use the embedded dev cluster.
    Embedded,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSetting,
    pub store: String,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Where this process stages files: the configured directory until
    /// [`Settings::use_process_staging`] moves it into the process's own subdirectory.
    pub staging_dir: PathBuf,
    /// The configured staging directory, which holds every process's subdirectory.
    pub staging_root: PathBuf,
    pub prebuild: crate::snapshot::PrebuildOptions,
}

impl Settings {
    pub fn resolve(args: &GlobalArgs) -> anyhow::Result<Settings> {
        let file = load_file(args.config.as_deref())?;
        let staging_root = args
            .staging_dir
            .clone()
            .or(file.staging_dir)
            .unwrap_or_else(std::env::temp_dir);
        let database = args
            .database_url
            .clone()
            .filter(|url| !url.is_empty())
            .or(file.database_url)
            .map_or(DatabaseSetting::Embedded, DatabaseSetting::Url);
        Ok(Settings {
            database,
            store: args
                .store
                .clone()
                .or(file.store)
                .unwrap_or_else(|| DEFAULT_STORE.to_string()),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            prebuild: file.prebuild.over_defaults(staging_root.clone()),
            staging_dir: staging_root.clone(),
            staging_root,
        })
    }

    /// Stages everything this process writes locally in `staging` (see `crate::staging`).
    pub fn use_process_staging(&mut self, staging: &crate::staging::ProcessStaging) {
        self.staging_dir = staging.path().to_path_buf();
        self.prebuild.staging_dir = staging.path().to_path_buf();
    }
}

fn load_file(explicit: Option<&Path>) -> anyhow::Result<FileConfig> {
    let (path, required) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from("minion.toml"), false),
    };
    if !required && !path.exists() {
        return Ok(FileConfig::default());
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read config file {}; fix --config / MINION_CONFIG",
            path.display()
        )
    })?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "store = \"s3://from-file\"\nlog_format = \"json\"\ndatabase_url = \"postgres://file/db\"\n").unwrap();
        let args = GlobalArgs {
            config: Some(path.clone()),
            store: Some("/flag".into()),
            ..Default::default()
        };
        let settings = Settings::resolve(&args).unwrap();
        assert_eq!(settings.store, "/flag");
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(
            settings.database,
            DatabaseSetting::Url("postgres://file/db".into())
        );

        let defaults = Settings::resolve(&GlobalArgs {
            config: None,
            ..Default::default()
        });
        // No ./minion.toml in the test's working directory is assumed; defaults apply.
        if let Ok(defaults) = defaults {
            assert_eq!(defaults.log_format, LogFormat::Text);
        }
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "stor = \"x\"\n").unwrap();
        let err = Settings::resolve(&GlobalArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("stor"), "{err:#}");
    }

    #[test]
    fn key_layers_are_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let resolve = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Settings::resolve(&GlobalArgs {
                config: Some(path.clone()),
                ..Default::default()
            })
        };
        let settings = resolve("[prebuild]\nmax_key_layers = 1\n").unwrap();
        assert_eq!(settings.prebuild.max_key_layers, 1);
        let err = resolve("[prebuild]\nmax_key_layers = 0\n").unwrap_err();
        assert!(format!("{err:#}").contains("max_key_layers"), "{err:#}");
    }
}
