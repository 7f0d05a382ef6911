//! Fixed-width encodings shared by key runs, key-metadata SST values and the loader.
//!
//! Comparison values are carried as a *sortable* u64 so that every comparison column type orders
//! by plain integer comparison: integers and timestamps as `i64 ^ sign bit`, floats by the IEEE
//! total-order trick. The SST value stores the *natural* value (i64 or f64 bits), as DESIGN.md
//! section 6 asks; see `docs/FORMATS.md`.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimestampMillisecondType};

/// Width of an encoded [`KeyRecord`].
pub const RECORD_LEN: usize = 21;
/// Flag bit: the winning row is a delete tombstone.
pub const FLAG_DELETED: u8 = 1;

/// Whether the table's comparison column is a float (else an integer or timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComparisonKind {
    Integer,
    Float,
}

impl ComparisonKind {
    pub fn of(column_type: crate::table::ColumnType) -> ComparisonKind {
        match column_type {
            crate::table::ColumnType::Float64 => ComparisonKind::Float,
            _ => ComparisonKind::Integer,
        }
    }

    /// The kind of the table's comparison column.
    pub fn of_table(table: &crate::table::TableConfig) -> ComparisonKind {
        let column = table
            .column(&table.comparison)
            .expect("validated comparison column");
        ComparisonKind::of(column.column_type)
    }

    /// The sortable form of a natural value given as raw 8 bytes (i64 or f64 bits).
    pub fn sortable_from_natural(self, natural: u64) -> u64 {
        match self {
            ComparisonKind::Integer => natural ^ (1 << 63),
            ComparisonKind::Float => {
                if natural >> 63 == 1 {
                    !natural
                } else {
                    natural | (1 << 63)
                }
            }
        }
    }

    /// The natural value's raw 8 bytes (i64 or f64 bits) of a sortable value.
    pub fn natural_from_sortable(self, sortable: u64) -> u64 {
        match self {
            ComparisonKind::Integer => sortable ^ (1 << 63),
            ComparisonKind::Float => {
                if sortable >> 63 == 1 {
                    sortable & !(1 << 63)
                } else {
                    !sortable
                }
            }
        }
    }

    /// The value as f64, for TTL arithmetic and display.
    pub fn to_f64(self, sortable: u64) -> f64 {
        let natural = self.natural_from_sortable(sortable);
        match self {
            ComparisonKind::Integer => natural as i64 as f64,
            ComparisonKind::Float => f64::from_bits(natural),
        }
    }
}

/// Sortable comparison values of a column, row by row.
pub fn sortable_values(column: &dyn Array) -> Vec<u64> {
    let integer = ComparisonKind::Integer;
    match column.data_type() {
        DataType::Int32 => column
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|&v| integer.sortable_from_natural(v as i64 as u64))
            .collect(),
        DataType::Int64 => column
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| integer.sortable_from_natural(v as u64))
            .collect(),
        DataType::Timestamp(_, _) => column
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .iter()
            .map(|&v| integer.sortable_from_natural(v as u64))
            .collect(),
        DataType::Float64 => column
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| ComparisonKind::Float.sortable_from_natural(v.to_bits()))
            .collect(),
        other => panic!("comparison column of type {other} passed table validation"),
    }
}

/// Which key-metadata set a key lives in (issue 25). With `metadata_ttl`, keys whose winner
/// compares below the watermark (largest comparison - TTL) leave the *hot* set, which a server
/// consults for every row, for the *cold* set, consulted only when the hot set misses; without
/// the TTL every key is hot. A key is in at most one of the two, and both hold the same records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeySet {
    Hot,
    Cold,
}

impl KeySet {
    /// The set of a key whose winner compares as `value` (f64) against `watermark`.
    pub fn for_value(value: f64, watermark: Option<f64>) -> KeySet {
        match watermark.is_some_and(|w| value < w) {
            true => KeySet::Cold,
            false => KeySet::Hot,
        }
    }

    /// The set of a record (natural comparison value) against `watermark`.
    pub fn of_record(record: &KeyRecord, kind: ComparisonKind, watermark: Option<f64>) -> KeySet {
        KeySet::for_value(
            kind.to_f64(kind.sortable_from_natural(record.comparison)),
            watermark,
        )
    }
}

/// The key-metadata value: where a key's winning row is, and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRecord {
    pub segment_id: u64,
    pub doc_id: u32,
    /// Natural comparison value: i64 or f64 bits, per the table's comparison type.
    pub comparison: u64,
    pub deleted: bool,
}

impl KeyRecord {
    /// `segment_id u64 | doc_id u32 | comparison 8 bytes | flags u8`, all little-endian.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..8].copy_from_slice(&self.segment_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.doc_id.to_le_bytes());
        out[12..20].copy_from_slice(&self.comparison.to_le_bytes());
        out[20] = if self.deleted { FLAG_DELETED } else { 0 };
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<KeyRecord> {
        if bytes.len() != RECORD_LEN {
            return None;
        }
        Some(KeyRecord {
            segment_id: u64::from_le_bytes(bytes[0..8].try_into().ok()?),
            doc_id: u32::from_le_bytes(bytes[8..12].try_into().ok()?),
            comparison: u64::from_le_bytes(bytes[12..20].try_into().ok()?),
            deleted: bytes[20] & FLAG_DELETED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_orders_like_the_values() {
        let ints = [i64::MIN, -3, 0, 5, i64::MAX];
        let encoded: Vec<u64> = ints
            .iter()
            .map(|&v| ComparisonKind::Integer.sortable_from_natural(v as u64))
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]));
        let floats = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-9, 3.0, f64::INFINITY];
        let encoded: Vec<u64> = floats
            .iter()
            .map(|v| ComparisonKind::Float.sortable_from_natural(v.to_bits()))
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
        for v in floats {
            let s = ComparisonKind::Float.sortable_from_natural(v.to_bits());
            assert_eq!(ComparisonKind::Float.natural_from_sortable(s), v.to_bits());
        }
        assert_eq!(
            ComparisonKind::Integer
                .to_f64(ComparisonKind::Integer.sortable_from_natural(-7i64 as u64)),
            -7.0
        );
    }

    #[test]
    fn records_round_trip() {
        let record = KeyRecord {
            segment_id: 77,
            doc_id: 123_456,
            comparison: (-5i64) as u64,
            deleted: true,
        };
        let bytes = record.encode();
        assert_eq!(bytes.len(), RECORD_LEN);
        assert_eq!(KeyRecord::decode(&bytes), Some(record));
        assert_eq!(&bytes[0..8], &77u64.to_le_bytes());
        assert_eq!(KeyRecord::decode(&bytes[1..]), None);
    }
}
