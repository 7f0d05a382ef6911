//! Object-key layout (DESIGN.md section 5). Every part was validated as an identifier.

pub fn table_prefix(table: &str) -> String {
    format!("tables/{table}/")
}

pub fn segment_key(table: &str, partition: u32, segment_name: &str) -> String {
    format!("tables/{table}/p{partition}/segments/{segment_name}.parquet")
}

/// The sorted key run of a segment (built once, reused by every prebuild).
pub fn keyrun_key(table: &str, partition: u32, segment_name: &str) -> String {
    format!("tables/{table}/p{partition}/keyruns/{segment_name}.run")
}

/// A snapshot's directory. The random suffix keeps objects write-once even when two
/// prebuilds race for the same version (only one publishes; the other's objects are garbage).
pub fn snapshot_prefix(table: &str, partition: u32, version: i64) -> String {
    format!(
        "tables/{table}/p{partition}/snapshots/{version:010}-{:08x}/",
        rand::random::<u32>()
    )
}
