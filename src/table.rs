//! Table declarations: the TOML file an operator writes, its validation, and the Arrow schema that
//! every segment of the table carries.
//!
//! A table is declared once (`minion table create --file F.toml`) and stored in the catalog as JSON,
//! so workers never need the original file. Validation happens here, before anything is stored, and
//! every error names the field and how to fix it.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Maximum number of partitions a table may declare; more would only create tiny segments.
pub const MAX_PARTITIONS: u32 = 4096;

/// A column type. Timestamps are milliseconds since the Unix epoch, without a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int32,
    Int64,
    Float64,
    Bool,
    String,
    Bytes,
    Timestamp,
}

impl ColumnType {
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::String => DataType::Utf8,
            ColumnType::Bytes => DataType::Binary,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    /// Types whose values order numerically, usable as the comparison column.
    pub fn is_comparable(self) -> bool {
        matches!(
            self,
            ColumnType::Int32 | ColumnType::Int64 | ColumnType::Float64 | ColumnType::Timestamp
        )
    }

    /// Floats make poor keys (NaN, -0.0): they are refused in primary keys.
    pub fn can_be_key(self) -> bool {
        !matches!(self, ColumnType::Float64)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::String => "string",
            ColumnType::Bytes => "bytes",
            ColumnType::Timestamp => "timestamp",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Key, comparison and delete columns are never nullable (declaring them so is an error).
    #[serde(default = "default_true")]
    pub nullable: bool,
}

fn default_true() -> bool {
    true
}

/// How primary keys are turned into key-metadata keys (DESIGN.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryKeyHash {
    /// 16-byte xxh3-128 of the encoded key: fixed width, small, collision odds ~2^-64 at 2^32 keys.
    #[default]
    Xxh3_128,
    /// The order-preserving encoding of the raw key itself: exact, larger for long keys.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlConfig {
    /// Deleted keys whose tombstone is older than (largest comparison value - this) are forgotten,
    /// in the comparison column's units.
    pub deleted_keys_ttl: Option<f64>,
    /// Keys older than (largest comparison value - this) leave the key-metadata file.
    pub metadata_ttl: Option<f64>,
}

/// When and how a table's segments are compacted and merged: Pinot's UpsertCompactionTask and
/// UpsertCompactMergeTask generator settings (README, "Compaction settings").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// A segment is compacted once at least this fraction of its rows is invalid...
    pub invalid_ratio_threshold: f64,
    /// ...and at least this many rows are invalid (both must hold).
    pub invalid_count_threshold: u64,
    /// Segments younger than this (milliseconds since creation) are left alone.
    pub buffer_period_ms: u64,
    /// Records per merged output segment: merge stops adding inputs once the output's valid
    /// rows would exceed this (Pinot's maxNumRecordsPerSegment).
    pub target_segment_rows: u64,
    /// Records one merge task may read, valid or not (Pinot's maxNumRecordsPerTask).
    pub max_records_per_merge_task: u64,
    /// Upper bound on segments merged by one merge task (Pinot's maxNumSegmentsPerTask).
    pub max_segments_per_merge: u32,
    /// A merge group with fewer segments is not merged (its segments may still be compacted).
    pub min_segments_per_merge: u32,
    /// Upper bound on compact and merge tasks generated per table and plan.
    pub max_tasks_per_table: u32,
    /// No new compact or merge tasks for a table while earlier ones are unfinished.
    pub skip_while_unfinished: bool,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            invalid_ratio_threshold: 0.3,
            invalid_count_threshold: 1,
            buffer_period_ms: 0,
            target_segment_rows: 5_000_000,
            max_records_per_merge_task: 20_000_000,
            max_segments_per_merge: 10,
            min_segments_per_merge: 2,
            max_tasks_per_table: 10,
            skip_while_unfinished: true,
        }
    }
}

/// Overrides of a table's `[compaction]` settings for one plan (a schedule's
/// `[schedule.args.compaction]`, or `minion job submit plan --invalid-ratio-threshold ...`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct CompactionOverrides {
    /// Instead of the table's `compaction.invalid_ratio_threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub invalid_ratio_threshold: Option<f64>,
    /// Instead of the table's `compaction.invalid_count_threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub invalid_count_threshold: Option<u64>,
    /// Instead of the table's `compaction.buffer_period_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub buffer_period_ms: Option<u64>,
    /// Instead of the table's `compaction.target_segment_rows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub target_segment_rows: Option<u64>,
    /// Instead of the table's `compaction.max_records_per_merge_task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub max_records_per_merge_task: Option<u64>,
    /// Instead of the table's `compaction.max_segments_per_merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub max_segments_per_merge: Option<u32>,
    /// Instead of the table's `compaction.min_segments_per_merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub min_segments_per_merge: Option<u32>,
    /// Instead of the table's `compaction.max_tasks_per_table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub max_tasks_per_table: Option<u32>,
    /// Instead of the table's `compaction.skip_while_unfinished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub skip_while_unfinished: Option<bool>,
}

impl CompactionOverrides {
    pub fn is_empty(&self) -> bool {
        self == &CompactionOverrides::default()
    }

    /// The table's settings with these overrides applied, checked as a table file's would be.
    pub fn apply(&self, base: &CompactionConfig) -> Result<CompactionConfig, String> {
        let mut c = base.clone();
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(value) = self.$field { c.$field = value; } )* };
        }
        set!(
            invalid_ratio_threshold,
            invalid_count_threshold,
            buffer_period_ms,
            target_segment_rows,
            max_records_per_merge_task,
            max_segments_per_merge,
            min_segments_per_merge,
            max_tasks_per_table,
            skip_while_unfinished
        );
        c.check()
            .map_err(|(field, message)| format!("`compaction.{field}`: {message}"))?;
        Ok(c)
    }
}

impl CompactionConfig {
    /// The field at fault and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.invalid_ratio_threshold) {
            return Err((
                "invalid_ratio_threshold",
                format!(
                    "must be between 0 and 1, got {}",
                    self.invalid_ratio_threshold
                ),
            ));
        }
        if self.target_segment_rows == 0 {
            return Err(("target_segment_rows", "must be at least 1".into()));
        }
        if self.max_records_per_merge_task == 0 {
            return Err(("max_records_per_merge_task", "must be at least 1".into()));
        }
        if self.max_segments_per_merge < 2 {
            return Err(("max_segments_per_merge", "must be at least 2".into()));
        }
        if self.min_segments_per_merge < 2
            || self.min_segments_per_merge > self.max_segments_per_merge
        {
            return Err((
                "min_segments_per_merge",
                format!(
                    "must be between 2 and max_segments_per_merge ({}), got {}",
                    self.max_segments_per_merge, self.min_segments_per_merge
                ),
            ));
        }
        Ok(())
    }
}

/// A table as declared by its TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    pub partitions: u32,
    pub primary_key: Vec<String>,
    pub comparison: String,
    #[serde(default)]
    pub delete_column: Option<String>,
    #[serde(default)]
    pub primary_key_hash: PrimaryKeyHash,
    pub columns: Vec<Column>,
    #[serde(default)]
    pub ttl: TtlConfig,
    #[serde(default)]
    pub compaction: CompactionConfig,
}

/// A table file that cannot be used, with the field at fault and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read table file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("table file {path} is not valid TOML for a table: {message}")]
    Parse { path: String, message: String },
    #[error("table file {path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

impl TableConfig {
    pub fn from_file(path: &std::path::Path) -> Result<TableConfig, TableError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TableError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    /// Parses and validates; `origin` names the file in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<TableConfig, TableError> {
        let table: TableConfig = toml::from_str(text).map_err(|err| TableError::Parse {
            path: origin.to_string(),
            message: err.to_string().trim_end().replace('\n', " "),
        })?;
        let invalid = |(field, message): (String, String)| TableError::Invalid {
            path: origin.to_string(),
            field,
            message,
        };
        table.validate().map_err(invalid)?;
        table.refuse_nullable_roles(text).map_err(invalid)?;
        Ok(table.normalized())
    }

    /// Key, comparison and delete columns never hold nulls: declaring one `nullable = true` is
    /// an error, not silently ignored.
    fn refuse_nullable_roles(&self, text: &str) -> Result<(), (String, String)> {
        // Whether `nullable = true` was written (the default is true too): from the text itself.
        let written: Vec<bool> = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("columns").and_then(|c| c.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .map(|c| c.get("nullable").and_then(|n| n.as_bool()) == Some(true))
            .collect();
        for (index, column) in self.columns.iter().enumerate() {
            let role = if self.primary_key.contains(&column.name) {
                "a primary-key column"
            } else if column.name == self.comparison {
                "the comparison column"
            } else if self.delete_column.as_deref() == Some(column.name.as_str()) {
                "the delete column"
            } else {
                continue;
            };
            if written.get(index).copied().unwrap_or(false) {
                return Err((
                    format!("columns.{}.nullable", column.name),
                    format!(
                        "`{}` is {role}, which never holds nulls; remove `nullable = true`",
                        column.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The declaration as it is kept and shown: key, comparison and delete columns say
    /// `nullable = false`, as they are.
    pub fn normalized(mut self) -> TableConfig {
        let roles: Vec<String> = (self.primary_key.iter())
            .chain(std::iter::once(&self.comparison))
            .chain(self.delete_column.iter())
            .cloned()
            .collect();
        for column in &mut self.columns {
            if roles.contains(&column.name) {
                column.nullable = false;
            }
        }
        self
    }

    /// Checks everything the TOML grammar cannot. Returns (field, message with the fix).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_string(), message));
        if let Err(why) = validate_identifier(&self.name) {
            return fail("name", why);
        }
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return fail(
                "partitions",
                format!(
                    "must be between 1 and {MAX_PARTITIONS}, got {}",
                    self.partitions
                ),
            );
        }
        if self.columns.is_empty() {
            return fail("columns", "declare at least one [[columns]] entry".into());
        }
        let mut seen = HashSet::new();
        for (index, column) in self.columns.iter().enumerate() {
            if let Err(why) = validate_identifier(&column.name) {
                return fail(&format!("columns[{index}].name"), why);
            }
            if !seen.insert(column.name.as_str()) {
                return fail(
                    &format!("columns[{index}].name"),
                    format!(
                        "column `{}` is declared twice; rename or remove one",
                        column.name
                    ),
                );
            }
        }
        if self.primary_key.is_empty() {
            return fail(
                "primary_key",
                "list at least one column, e.g. primary_key = [\"id\"]".into(),
            );
        }
        let mut key_seen = HashSet::new();
        for key in &self.primary_key {
            let Some(column) = self.column(key) else {
                return fail(
                    "primary_key",
                    format!("column `{key}` is not declared in [[columns]]"),
                );
            };
            if !column.column_type.can_be_key() {
                return fail(
                    "primary_key",
                    format!("column `{key}` is {}; keys must be integer, bool, string, bytes or timestamp", column.column_type),
                );
            }
            if !key_seen.insert(key.as_str()) {
                return fail("primary_key", format!("column `{key}` is listed twice"));
            }
        }
        let Some(comparison) = self.column(&self.comparison) else {
            return fail(
                "comparison",
                format!(
                    "column `{}` is not declared in [[columns]]",
                    self.comparison
                ),
            );
        };
        if !comparison.column_type.is_comparable() {
            return fail(
                "comparison",
                format!(
                    "column `{}` is {}; use an int32, int64, float64 or timestamp column",
                    self.comparison, comparison.column_type
                ),
            );
        }
        if self.primary_key.contains(&self.comparison) {
            return fail("comparison", "must not be a primary key column".into());
        }
        if let Some(delete) = &self.delete_column {
            let Some(column) = self.column(delete) else {
                return fail(
                    "delete_column",
                    format!("column `{delete}` is not declared in [[columns]]"),
                );
            };
            if column.column_type != ColumnType::Bool {
                return fail(
                    "delete_column",
                    format!(
                        "column `{delete}` is {}; a delete column must be bool",
                        column.column_type
                    ),
                );
            }
            if self.primary_key.contains(delete) || *delete == self.comparison {
                return fail(
                    "delete_column",
                    "must not be a key or the comparison column".into(),
                );
            }
        }
        for (field, ttl) in [
            ("ttl.deleted_keys_ttl", self.ttl.deleted_keys_ttl),
            ("ttl.metadata_ttl", self.ttl.metadata_ttl),
        ] {
            if let Some(value) = ttl {
                if !(value.is_finite() && value > 0.0) {
                    return fail(field, format!("must be a positive number, got {value}; remove it to keep keys forever"));
                }
            }
        }
        if self.ttl.deleted_keys_ttl.is_some() && self.delete_column.is_none() {
            return fail(
                "ttl.deleted_keys_ttl",
                "needs a delete_column; set one or remove the TTL".into(),
            );
        }
        if let Err((field, message)) = self.compaction.check() {
            return fail(&format!("compaction.{field}"), message);
        }
        Ok(())
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|column| column.name == name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }

    /// Whether a column may hold nulls: key, comparison and delete columns never do.
    pub fn is_nullable(&self, column: &Column) -> bool {
        column.nullable
            && !self.primary_key.contains(&column.name)
            && column.name != self.comparison
            && self.delete_column.as_deref() != Some(column.name.as_str())
    }

    /// The Arrow schema of every segment, in declared column order.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|column| {
                Field::new(
                    &column.name,
                    column.column_type.arrow_type(),
                    self.is_nullable(column),
                )
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Indices of the primary-key columns in declared schema order of `primary_key`.
    pub fn key_indices(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .map(|name| self.column_index(name).expect("validated key column"))
            .collect()
    }

    pub fn comparison_index(&self) -> usize {
        self.column_index(&self.comparison)
            .expect("validated comparison column")
    }

    pub fn delete_index(&self) -> Option<usize> {
        self.delete_column
            .as_ref()
            .map(|name| self.column_index(name).expect("validated delete column"))
    }
}

/// Names that become object-store path parts: letters, digits, `_` and `-`, 1 to 128 characters,
/// starting with a letter or digit. This rules out `/`, `..`, and control characters.
pub fn validate_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("`{name}` must be 1 to 128 characters long"));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !(first_ok && all_ok) {
        return Err(format!(
            "`{}` may hold only ASCII letters, digits, `_` and `-`, and must start with a letter or digit",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = include_str!("../examples/tables/orders.toml");
    const SESSIONS: &str = include_str!("../examples/tables/sessions.toml");

    #[test]
    fn shipped_examples_are_valid() {
        let orders = TableConfig::from_toml(ORDERS, "orders.toml").unwrap();
        assert_eq!(orders.primary_key, vec!["order_id"]);
        assert_eq!(orders.delete_column.as_deref(), Some("deleted"));
        let sessions = TableConfig::from_toml(SESSIONS, "sessions.toml").unwrap();
        assert_eq!(sessions.primary_key.len(), 2);
        assert_eq!(sessions.primary_key_hash, PrimaryKeyHash::None);
    }

    fn invalid_field(text: &str) -> String {
        match TableConfig::from_toml(text, "t.toml") {
            Err(TableError::Invalid { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let bad_key = ORDERS.replace("primary_key = [\"order_id\"]", "primary_key = [\"nope\"]");
        assert_eq!(invalid_field(&bad_key), "primary_key");
        let bad_cmp = ORDERS.replace("comparison = \"updated_at\"", "comparison = \"status\"");
        assert_eq!(invalid_field(&bad_cmp), "comparison");
        let bad_name = ORDERS.replace("name = \"orders\"", "name = \"../etc\"");
        assert_eq!(invalid_field(&bad_name), "name");
        let no_partitions = ORDERS.replace("partitions = 4", "partitions = 0");
        assert_eq!(invalid_field(&no_partitions), "partitions");
    }

    #[test]
    fn unknown_fields_and_types_are_parse_errors() {
        let typo = ORDERS.replace("partitions = 4", "partitons = 4");
        let err = TableConfig::from_toml(&typo, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("partitons"), "{err}");
        let bad_type = ORDERS.replace("type = \"float64\"", "type = \"double\"");
        let err = TableConfig::from_toml(&bad_type, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("double"), "{err}");
    }

    #[test]
    fn identifiers_reject_path_tricks() {
        for bad in ["", "..", "a/b", "a\nb", "-x", "a b", "é"] {
            assert!(validate_identifier(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["orders", "o_1", "A-2"] {
            assert!(validate_identifier(good).is_ok());
        }
    }
}

/// A table declaration of any content is parsed and validated without a panic, and one that
/// validates survives what the rest of the system does with it.
#[cfg(test)]
mod no_panic {
    use super::*;
    use proptest::prelude::*;

    const ORDERS: &str = include_str!("../examples/tables/orders.toml");

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("9223372036854775807".to_string()),
            Just("-9223372036854775808".to_string()),
            Just("1e308".to_string()),
            Just("-1e308".to_string()),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("0.0000001".to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u32>().prop_map(|v| v.to_string()),
            Just("\"text\"".to_string()),
        ]
    }

    /// A line of the example `orders.toml` whose value is replaced, or a line added.
    fn edit() -> impl Strategy<Value = (String, String)> {
        let keys = prop::sample::select(vec![
            "partitions",
            "deleted_keys_ttl",
            "invalid_ratio_threshold",
            "invalid_count_threshold",
            "buffer_period_ms",
            "target_segment_rows",
        ]);
        (keys, number()).prop_map(|(k, v)| (k.to_string(), v))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

        #[test]
        fn no_declaration_panics(edits in prop::collection::vec(edit(), 0..4), name in "\\PC{0,10}", extra in "\\PC{0,40}") {
            let mut text = ORDERS.replace("name = \"orders\"", &format!("name = {name:?}"));
            for (key, value) in &edits {
                let replaced: Vec<String> = text
                    .lines()
                    .map(|line| match line.split_once('=') {
                        Some((k, _)) if k.trim() == key => format!("{key} = {value}"),
                        _ => line.to_string(),
                    })
                    .collect();
                text = replaced.join("\n");
            }
            text.push('\n');
            text.push_str(&extra);
            if let Ok(table) = TableConfig::from_toml(&text, "t.toml") {
                let _ = table.arrow_schema();
                let _ = table.key_indices();
                let _ = toml::to_string_pretty(&table);
                let again = serde_json::to_value(&table).unwrap();
                assert_eq!(serde_json::from_value::<TableConfig>(again).unwrap().normalized(), table);
            }
        }
    }

    #[test]
    fn role_columns_refuse_nullable_and_show_not_nullable() {
        let text = ORDERS.replace(
            "name = \"order_id\"\ntype = \"int64\"",
            "name = \"order_id\"\ntype = \"int64\"\nnullable = true",
        );
        assert_ne!(text, ORDERS);
        match TableConfig::from_toml(&text, "t.toml") {
            Err(TableError::Invalid { field, message, .. }) => {
                assert_eq!(field, "columns.order_id.nullable");
                assert!(message.contains("primary-key column"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let table = TableConfig::from_toml(ORDERS, "orders.toml").unwrap();
        let shown = toml::to_string_pretty(&table).unwrap();
        for role in ["order_id", "updated_at", "deleted"] {
            let column = table.column(role).unwrap();
            assert!(
                !column.nullable,
                "{role} is shown as not nullable:\n{shown}"
            );
        }
        assert!(table.column("status").unwrap().nullable);
    }
}
