//! Parallel winner resolution for hashed keys: the key space is cut into equal ranges, each range
//! is merged and resolved on its own (one k-way merge over that range's slice of every run), and
//! the ranges run on several threads. Every range writes its own key-metadata files, so together
//! they are still in SST order: range 0's files hold the smallest keys.
//!
//! Which key lands in which file depends only on the number of ranges, chosen from the entry
//! count, `entries_per_key_range` and `max_key_ranges`, never on the thread count: the same inputs give the same files on
//! any machine.

use std::cmp::Reverse;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::keyrun::{HashedEntry, KeyRange, RunFile};
use super::record::{ComparisonKind, KeyRecord, KeySet};
use super::resolve::{Candidate, KeyGroup, Resolution, Resolver, Source, TtlSettings};

/// How a resolution is split: `ranges` key ranges resolved by up to `threads` threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangePlan {
    pub ranges: usize,
    pub threads: usize,
}

impl RangePlan {
    /// One range per `entries_per_range` entries, at most `max_ranges`.
    pub fn for_entries(
        entries: u64,
        entries_per_range: u64,
        max_ranges: usize,
        threads: usize,
    ) -> RangePlan {
        let wanted = (entries / entries_per_range.max(1)).max(1);
        RangePlan {
            ranges: wanted.min(max_ranges.max(1) as u64) as usize,
            threads: threads.max(1),
        }
    }
}

/// Where one key range's key metadata goes (hot and cold keys, each set in key order). Opened,
/// filled and finished on the thread that resolves the range.
pub trait KeySink {
    type Output: Send;
    fn put(&mut self, set: KeySet, key: &[u8], record: KeyRecord) -> anyhow::Result<()>;
    fn finish(self) -> anyhow::Result<Self::Output>;
}

/// What one resolver thread did: its resolution and the sink output of each range it took.
type ThreadResult<Output> = anyhow::Result<(Resolution, Vec<(usize, Output)>)>;

/// Resolves hashed `runs` (run i belongs to `sources[i]`) in `plan.ranges` key ranges; returns
/// the whole resolution and each range's sink output, in key order.
pub fn resolve_in_ranges<S: KeySink>(
    runs: &[RunFile],
    sources: &[Source],
    kind: ComparisonKind,
    ttl: TtlSettings,
    plan: RangePlan,
    open_sink: impl Fn(usize) -> anyhow::Result<S> + Sync,
) -> anyhow::Result<(Resolution, Vec<S::Output>)> {
    debug_assert_eq!(runs.len(), sources.len());
    let largest = runs.iter().filter_map(|r| r.header.max_comparison).max();
    let next_range = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // Each thread settles the keys of the ranges it takes with one resolver of its own, so its
    // bitmaps accumulate across ranges; the threads' resolutions are combined at the end.
    let work = || -> ThreadResult<S::Output> {
        let mut resolver = Resolver::new(sources, kind, ttl, largest);
        let mut outputs = Vec::new();
        loop {
            let index = next_range.fetch_add(1, Ordering::Relaxed);
            if index >= plan.ranges || failed.load(Ordering::Relaxed) {
                return Ok((resolver.finish(), outputs));
            }
            let range = KeyRange::nth_of(index, plan.ranges);
            let resolved = open_sink(index)
                .and_then(|sink| resolve_range(runs, range, sources, &mut resolver, sink));
            match resolved {
                Ok(output) => outputs.push((index, output)),
                Err(err) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(err);
                }
            }
        }
    };
    let per_thread = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..plan.threads.min(plan.ranges))
            .map(|_| scope.spawn(work))
            .collect();
        let mine = work();
        helpers
            .into_iter()
            .map(|helper| helper.join().expect("a resolver thread panicked"))
            .chain(std::iter::once(mine))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;

    let mut resolution = Resolver::new(sources, kind, ttl, largest).finish();
    let mut outputs = Vec::with_capacity(plan.ranges);
    for (part, thread_outputs) in per_thread {
        resolution.absorb(part);
        outputs.extend(thread_outputs);
    }
    outputs.sort_unstable_by_key(|(index, _)| *index);
    debug_assert_eq!(outputs.len(), plan.ranges);
    Ok((
        resolution,
        outputs.into_iter().map(|(_, output)| output).collect(),
    ))
}

/// One key range: a k-way merge of the range's slice of every run, settling each key as its
/// last entry goes by.
fn resolve_range<S: KeySink>(
    runs: &[RunFile],
    range: KeyRange,
    sources: &[Source],
    resolver: &mut Resolver,
    mut sink: S,
) -> anyhow::Result<S::Output> {
    let mut readers = runs
        .iter()
        .map(|run| run.slice(range))
        .collect::<Result<Vec<_>, _>>()?;
    // The heap holds (key, run) of each run's current entry; the entries themselves sit in
    // `current`, so heap moves stay small.
    let mut current: Vec<HashedEntry> = Vec::with_capacity(readers.len());
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (index, reader) in readers.iter_mut().enumerate() {
        let first = reader.next_entry()?;
        if let Some(entry) = first {
            heap.push(Reverse((entry.key, index)));
        }
        current.push(first.unwrap_or(HashedEntry {
            key: 0,
            comparison: 0,
            doc_id: 0,
            deleted: false,
        }));
    }
    // The key being gathered and its rows so far.
    let mut gathering: Option<(u128, KeyGroup)> = None;
    while let Some(mut top) = heap.peek_mut() {
        let Reverse((key, source)) = *top;
        let entry = current[source];
        match readers[source].next_entry()? {
            Some(next) => {
                debug_assert!(next.key >= key, "run entries out of order");
                current[source] = next;
                *top = Reverse((next.key, source));
            }
            None => {
                PeekMut::pop(top);
            }
        }
        let candidate = Candidate::new(source, entry.comparison, entry.doc_id, entry.deleted);
        match &mut gathering {
            Some((group_key, group)) if *group_key == key => group.add(candidate, sources),
            _ => {
                if let Some((done_key, group)) = gathering.replace((key, KeyGroup::new(candidate)))
                {
                    if let Some((set, record)) = resolver.settle(&group) {
                        sink.put(set, &done_key.to_be_bytes(), record)?;
                    }
                }
            }
        }
    }
    if let Some((done_key, group)) = gathering {
        if let Some((set, record)) = resolver.settle(&group) {
            sink.put(set, &done_key.to_be_bytes(), record)?;
        }
    }
    sink.finish()
}
