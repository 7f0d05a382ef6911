//! The job kinds on the command line: `minion run KIND` and `minion job submit KIND` take each
//! kind's typed flags (from the argument structs of `crate::job::args`), or `--args JSON` for
//! scripts. Both forms are parsed and validated the same way before anything runs or is queued.

use clap::error::ErrorKind;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, Subcommand};

use crate::job::args::{
    CompactArgs, FailArgs, GcArgs, MergeArgs, NoopArgs, PlanArgs, PrebuildArgs, PruneArgs,
    SleepArgs,
};
use crate::job::refs::CatalogRef;
use crate::job::JobArgs;
use crate::queue::NewJob;
use crate::tasks::Registry;

/// The id of the `--args JSON` flag every kind has.
const JSON: &str = "json_args";

/// A kind and its arguments, as typed flags or as `--args JSON`.
#[derive(Debug, Subcommand)]
pub enum KindCommand {
    Prebuild(Given<PrebuildArgs>),
    Compact(Given<CompactArgs>),
    Merge(Given<MergeArgs>),
    Plan(Given<PlanArgs>),
    Gc(Given<GcArgs>),
    Prune(Given<PruneArgs>),
    Noop(Given<NoopArgs>),
    Sleep(Given<SleepArgs>),
    Fail(Given<FailArgs>),
    /// Any other name: refused with the list of kinds.
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

impl KindCommand {
    /// The queue row for this kind and its arguments (with the kind's default unique key), and
    /// what the arguments name in the catalog (checked before submitting).
    pub fn into_job(self) -> anyhow::Result<(NewJob, Vec<CatalogRef>)> {
        fn both(args: impl JobArgs) -> (NewJob, Vec<CatalogRef>) {
            (args.to_job(), args.catalog_refs())
        }
        Ok(match self {
            KindCommand::Prebuild(Given(args)) => both(args),
            KindCommand::Compact(Given(args)) => both(args),
            KindCommand::Merge(Given(args)) => both(args),
            KindCommand::Plan(Given(args)) => both(args),
            KindCommand::Gc(Given(args)) => both(args),
            KindCommand::Prune(Given(args)) => both(args),
            KindCommand::Noop(Given(args)) => both(args),
            KindCommand::Sleep(Given(args)) => both(args),
            KindCommand::Fail(Given(args)) => both(args),
            KindCommand::Unknown(words) => {
                let kind = words.first().map(String::as_str).unwrap_or_default();
                // Always an error: the registry knows exactly the kinds above.
                Registry::standard().get(kind)?;
                anyhow::bail!("job kind `{kind}` has no command-line form");
            }
        })
    }
}

/// One kind's arguments: its typed flags, or `--args JSON` instead of them.
#[derive(Debug, Clone)]
pub struct Given<A>(pub A);

impl<A: JobArgs + Args> Args for Given<A> {
    fn augment_args(command: Command) -> Command {
        let command = A::augment_args(command);
        let flags: Vec<clap::Id> = command
            .get_arguments()
            .map(|arg| arg.get_id().clone())
            .collect();
        command
            .about(A::ABOUT)
            // With `--args`, no flag is required (and none may be given).
            .mut_args(|arg| {
                if arg.is_required_set() {
                    arg.required(false).required_unless_present(JSON)
                } else {
                    arg
                }
            })
            .arg(
                Arg::new(JSON)
                    .long("args")
                    .value_name("JSON")
                    .help("All arguments as one JSON object instead of the flags above (for scripts), e.g. '{\"table\": \"orders\"}'")
                    .conflicts_with_all(flags),
            )
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl<A: JobArgs + Args> FromArgMatches for Given<A> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid arguments for `{}`: {message}\n", A::KIND),
            )
        };
        let args = match matches.remove_one::<String>(JSON) {
            Some(text) => from_json_text::<A>(&text).map_err(invalid)?,
            None => {
                let args = A::from_arg_matches_mut(matches)?;
                args.validate().map_err(invalid)?;
                args
            }
        };
        Ok(Given(args))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.update_from_arg_matches_mut(&mut matches.clone())
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches_mut(matches)?;
        Ok(())
    }
}

/// Parses `--args` text: a JSON object with the kind's fields.
fn from_json_text<A: JobArgs>(text: &str) -> Result<A, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|err| {
        format!("--args is not valid JSON ({err}); pass an object like '{{\"table\": \"orders\"}}'")
    })?;
    if !value.is_object() {
        return Err(format!("--args must be a JSON object, got {value}"));
    }
    A::from_json(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        kind: KindCommand,
    }

    fn job(words: &[&str]) -> Result<NewJob, String> {
        let cli = Cli::try_parse_from(std::iter::once("run").chain(words.iter().copied()))
            .map_err(|err| err.to_string())?;
        cli.kind
            .into_job()
            .map(|(job, _)| job)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn every_registered_kind_has_a_command_and_no_other() {
        let command = <Cli as clap::CommandFactory>::command();
        let mut names: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
        names.sort_unstable();
        assert_eq!(names, Registry::standard().kinds());
    }

    #[test]
    fn flags_and_json_give_the_same_job() {
        let typed = job(&[
            "merge",
            "--table",
            "orders",
            "--partition",
            "0",
            "--segments",
            "3,4,5",
        ])
        .unwrap();
        let json = job(&[
            "merge",
            "--args",
            r#"{"table": "orders", "partition": 0, "segment_ids": [3, 4, 5]}"#,
        ])
        .unwrap();
        assert_eq!(
            (typed.kind.as_str(), &typed.args),
            (json.kind.as_str(), &json.args)
        );
        assert_eq!(typed.unique_key.as_deref(), Some("merge:orders:0:3,4,5"));
        let gc = job(&["gc", "--table", "orders", "--grace", "2h"]).unwrap();
        assert_eq!(gc.args["grace_seconds"], 7200.0);
        let plan = job(&["plan", "--table", "orders", "--dry-run"]).unwrap();
        assert_eq!(plan.args["submit"], false);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_field() {
        let err = job(&["prebuild", "--table", "orders"]).unwrap_err();
        assert!(err.contains("--partition"), "{err}");
        let err = job(&[
            "merge",
            "--table",
            "t",
            "--partition",
            "0",
            "--segments",
            "3",
        ])
        .unwrap_err();
        assert!(err.contains("two or more"), "{err}");
        let err = job(&["sleep", "--args", "[1]"]).unwrap_err();
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = job(&["prebuild", "--table", "t", "--args", "{}"]).unwrap_err();
        assert!(err.contains("cannot be used with"), "{err}");
        let err = job(&["frobnicate"]).unwrap_err();
        assert!(err.contains("unknown job kind `frobnicate`"), "{err}");
    }
}
