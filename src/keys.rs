//! Primary-key encoding, hashing and partition routing.
//!
//! Every consumer of keys (ingest routing, prebuild, the serving loader) goes through this module so
//! that one key always encodes to the same bytes. The encoding is order-preserving and
//! self-delimiting, so composite keys compare column by column and never collide by concatenation:
//!
//! - int32 / int64 / timestamp: big-endian two's complement with the sign bit flipped (4 or 8 bytes);
//! - bool: one byte, 0 or 1;
//! - string / bytes: the bytes with 0x00 escaped as 0x00 0xFF, terminated by 0x00 0x01.
//!
//! The partition of a key is `xxh3_64(encoded key) % partitions`, independent of `primary_key_hash`,
//! so changing the key-metadata hashing never moves a key to another partition.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int32Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::table::PrimaryKeyHash;

/// Encodes the key of row `row` built from `columns` (the key columns, in key order) into `out`.
///
/// Panics on an unsupported type or a null key; both are ruled out by table validation and the
/// non-nullable key fields of the segment schema.
pub fn encode_key_into(columns: &[ArrayRef], row: usize, out: &mut Vec<u8>) {
    out.clear();
    for column in columns {
        debug_assert!(
            !column.is_null(row),
            "null key values are rejected at ingest"
        );
        match column.data_type() {
            DataType::Int32 => {
                let value = column
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .unwrap()
                    .value(row);
                out.extend_from_slice(&((value as u32) ^ 0x8000_0000).to_be_bytes());
            }
            DataType::Int64 => {
                let value = column
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(row);
                push_i64(out, value);
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                let value = column
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .unwrap()
                    .value(row);
                push_i64(out, value);
            }
            DataType::Boolean => {
                let value = column
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .unwrap()
                    .value(row);
                out.push(value as u8);
            }
            DataType::Utf8 => {
                let value = column
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .value(row);
                push_escaped(out, value.as_bytes());
            }
            DataType::Binary => {
                let value = column
                    .as_any()
                    .downcast_ref::<BinaryArray>()
                    .unwrap()
                    .value(row);
                push_escaped(out, value);
            }
            DataType::LargeUtf8 => {
                push_escaped(out, column.as_string::<i64>().value(row).as_bytes())
            }
            other => panic!("unsupported key column type {other}"),
        }
    }
}

fn push_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&((value as u64) ^ 0x8000_0000_0000_0000).to_be_bytes());
}

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The partition a key belongs to.
pub fn partition_of(encoded_key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    (xxh3_64(encoded_key) % partitions as u64) as u32
}

/// The key-metadata key of an encoded primary key (DESIGN.md section 6).
pub fn metadata_key(encoded_key: &[u8], hash: PrimaryKeyHash, out: &mut Vec<u8>) {
    out.clear();
    match hash {
        PrimaryKeyHash::Xxh3_128 => out.extend_from_slice(&xxh3_128(encoded_key).to_be_bytes()),
        PrimaryKeyHash::None => out.extend_from_slice(encoded_key),
    }
}

/// Partition of every row of a batch, given its key columns.
pub fn partitions_of_rows(key_columns: &[ArrayRef], rows: usize, partitions: u32) -> Vec<u32> {
    let mut buffer = Vec::with_capacity(64);
    (0..rows)
        .map(|row| {
            encode_key_into(key_columns, row, &mut buffer);
            partition_of(&buffer, partitions)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn encode(columns: &[ArrayRef], row: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key_into(columns, row, &mut out);
        out
    }

    #[test]
    fn integers_keep_their_order() {
        let values = vec![i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let column: ArrayRef = Arc::new(Int64Array::from(values.clone()));
        let encoded: Vec<Vec<u8>> = (0..values.len())
            .map(|row| encode(std::slice::from_ref(&column), row))
            .collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
    }

    #[test]
    fn composite_strings_do_not_collide_by_concatenation() {
        let first: ArrayRef = Arc::new(StringArray::from(vec!["ab", "a", "a\0"]));
        let second: ArrayRef = Arc::new(StringArray::from(vec!["c", "bc", "bc"]));
        let columns = [first, second];
        let keys: Vec<Vec<u8>> = (0..3).map(|row| encode(&columns, row)).collect();
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        // "a" < "a\0" < "ab" as strings; the encoding must agree.
        assert!(keys[1] < keys[2] && keys[2] < keys[0]);
    }

    #[test]
    fn routing_is_stable_and_in_range() {
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
        let first = partitions_of_rows(std::slice::from_ref(&column), 1000, 7);
        let second = partitions_of_rows(&[column], 1000, 7);
        assert_eq!(first, second);
        assert!(first.iter().all(|&p| p < 7));
        // All partitions get keys: the hash spreads them.
        for partition in 0..7 {
            assert!(first.contains(&partition));
        }
        // Pinned value: changing the routing would move existing keys between partitions.
        let mut buffer = Vec::new();
        push_i64(&mut buffer, 42);
        assert_eq!(
            partition_of(&buffer, 1024),
            (xxh3_64(&buffer) % 1024) as u32
        );
    }

    #[test]
    fn metadata_keys_by_hash_setting() {
        let mut out = Vec::new();
        metadata_key(b"abc", PrimaryKeyHash::Xxh3_128, &mut out);
        assert_eq!(out.len(), 16);
        metadata_key(b"abc", PrimaryKeyHash::None, &mut out);
        assert_eq!(out, b"abc");
    }
}
