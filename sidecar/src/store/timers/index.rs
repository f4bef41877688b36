//! Where a replica's earliest timers are: per domain, a lower bound of each key group's earliest
//! timer, so that finding the due timers reads only the groups that may hold some. The invariant
//! and why it holds under concurrent batches: see the parent module.

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::ops::Bound;

use super::{Domain, Timer, TimerPage, TimerRef};
use crate::store::StoreError;

/// Lower bounds of each group's earliest timer, for one domain.
#[derive(Debug, Default)]
pub struct DomainIndex {
    bounds: HashMap<u32, u64>,
    /// `(bound, group)` for every group in `bounds`, so groups are visited earliest first.
    order: BTreeSet<(u64, u32)>,
}

impl DomainIndex {
    /// A timer at `time` was committed in `group`.
    pub fn note(&mut self, group: u32, time: u64) {
        match self.bounds.get(&group) {
            Some(&bound) if bound <= time => {}
            old => {
                if let Some(&old) = old {
                    self.order.remove(&(old, group));
                }
                self.bounds.insert(group, time);
                self.order.insert((time, group));
            }
        }
    }

    /// `group`'s earliest timer is exactly `head` (`None`: it has none).
    pub fn set(&mut self, group: u32, head: Option<u64>) {
        if let Some(old) = self.bounds.remove(&group) {
            self.order.remove(&(old, group));
        }
        if let Some(time) = head {
            self.bounds.insert(group, time);
            self.order.insert((time, group));
        }
    }

    fn after(&self, cursor: Option<(u64, u32)>) -> Option<(u64, u32)> {
        match cursor {
            None => self.order.iter().next().copied(),
            Some(c) => self
                .order
                .range((Bound::Excluded(c), Bound::Unbounded))
                .next()
                .copied(),
        }
    }

    /// The due timers (time at or below `up_to`; none when `up_to` is `None`), at most `limit`
    /// of them and about `byte_budget` bytes, earliest first. `read(group, visit)` calls `visit`
    /// with the group's timers of this domain in time order until it returns false. Visits the
    /// groups whose bound is due, plus as many later ones as it takes to know the next time
    /// exactly, and leaves every visited group's bound exact.
    pub fn select_due<F>(
        &mut self,
        up_to: Option<u64>,
        limit: usize,
        byte_budget: usize,
        mut read: F,
    ) -> Result<TimerPage, StoreError>
    where
        F: FnMut(u32, &mut dyn FnMut(TimerRef<'_>) -> bool) -> Result<(), StoreError>,
    {
        let limit = limit.max(1);
        let is_due = |time: u64| up_to.is_some_and(|u| time <= u);
        // The page is always the earliest due timers seen; `cutoff` is the earliest due timer
        // left out (for the count or the bytes), and nothing at or after it may join later.
        let mut page: BinaryHeap<Timer> = BinaryHeap::new();
        let mut bytes = 0;
        let mut cutoff: Option<Timer> = None;
        // The earliest timer seen that is not due.
        let mut next_not_due: Option<u64> = None;
        let mut visited = HashSet::new();
        let mut cursor = None;
        while let Some((bound, group)) = self.after(cursor) {
            cursor = Some((bound, group));
            if !visited.insert(group) {
                continue; // its bound moved up when it was visited
            }
            if cutoff.as_ref().is_some_and(|c| bound > c.time) {
                break; // every timer left is later than one already left out
            }
            if !is_due(bound) && (cutoff.is_some() || next_not_due.is_some_and(|n| bound >= n)) {
                break; // the next time is known
            }
            let mut head = None;
            read(group, &mut |timer| {
                head.get_or_insert(timer.time);
                if !is_due(timer.time) {
                    next_not_due = Some(next_not_due.map_or(timer.time, |n| n.min(timer.time)));
                    return false;
                }
                if let Some(c) = &cutoff {
                    if timer.time > c.time {
                        return false;
                    }
                    if timer.order() >= c.order() {
                        return true;
                    }
                }
                let timer = timer.to_timer();
                bytes += timer.answer_bytes();
                page.push(timer);
                while page.len() > limit || (bytes > byte_budget && page.len() > 1) {
                    let Some(out) = page.pop() else { break };
                    bytes -= out.answer_bytes();
                    if cutoff.as_ref().is_none_or(|c| out < *c) {
                        cutoff = Some(out);
                    }
                }
                true
            })?;
            self.set(group, head);
        }
        Ok(TimerPage {
            has_more: cutoff.is_some(),
            next_time: cutoff.map(|c| c.time).or(next_not_due),
            up_to,
            timers: page.into_sorted_vec(),
        })
    }
}

/// Both domains' bounds.
#[derive(Debug, Default)]
pub struct TimerIndex {
    event: DomainIndex,
    processing: DomainIndex,
}

impl TimerIndex {
    pub fn domain(&mut self, domain: Domain) -> &mut DomainIndex {
        match domain {
            Domain::Event => &mut self.event,
            Domain::Processing => &mut self.processing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-memory twin of the timer family: one group's timers, in time order.
    #[derive(Default)]
    struct Twin {
        timers: BTreeSet<(u32, u64, Vec<u8>, Vec<u8>)>,
        reads: usize,
    }

    impl Twin {
        fn add(&mut self, index: &mut DomainIndex, group: u32, time: u64, key: &str) {
            self.timers
                .insert((group, time, key.as_bytes().to_vec(), Vec::new()));
            index.note(group, time);
        }

        fn remove(&mut self, t: &Timer) {
            self.timers
                .remove(&(t.key_group, t.time, t.key.clone(), t.name.clone()));
        }

        fn due(&mut self, index: &mut DomainIndex, up_to: Option<u64>, limit: usize) -> TimerPage {
            self.due_bytes(index, up_to, limit, usize::MAX)
        }

        fn due_bytes(
            &mut self,
            index: &mut DomainIndex,
            up_to: Option<u64>,
            limit: usize,
            budget: usize,
        ) -> TimerPage {
            let snapshot: Vec<_> = self.timers.iter().cloned().collect();
            let reads = &mut self.reads;
            index
                .select_due(up_to, limit, budget, |group, visit| {
                    *reads += 1;
                    for (g, time, key, name) in snapshot.iter().filter(|t| t.0 == group) {
                        let go_on = visit(TimerRef {
                            domain: Domain::Event,
                            time: *time,
                            key_group: *g,
                            key,
                            name,
                        });
                        if !go_on {
                            break;
                        }
                    }
                    Ok(())
                })
                .unwrap()
        }
    }

    fn times(page: &TimerPage) -> Vec<(u64, u32)> {
        page.timers.iter().map(|t| (t.time, t.key_group)).collect()
    }

    #[test]
    fn due_timers_come_earliest_first_across_groups() {
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        for (group, time) in [(5, 30), (1, 20), (9, 10), (1, 40), (5, 50)] {
            twin.add(&mut index, group, time, "k");
        }
        let page = twin.due(&mut index, Some(40), 10);
        assert_eq!(times(&page), [(10, 9), (20, 1), (30, 5), (40, 1)]);
        assert!(!page.has_more);
        assert_eq!(page.next_time, Some(50), "the next one to become due");
    }

    #[test]
    fn a_full_page_says_more_are_due_and_when() {
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        for (group, time) in [(1, 1), (2, 2), (1, 3), (3, 4), (2, 5)] {
            twin.add(&mut index, group, time, "k");
        }
        let page = twin.due(&mut index, Some(100), 3);
        assert_eq!(times(&page), [(1, 1), (2, 2), (3, 1)]);
        assert!(page.has_more);
        assert_eq!(page.next_time, Some(4), "the earliest due timer left out");
        // Firing the page (deleting it) makes the rest come next.
        for t in &page.timers {
            twin.remove(t);
        }
        let page = twin.due(&mut index, Some(100), 3);
        assert_eq!(times(&page), [(4, 3), (5, 2)]);
        assert!(!page.has_more);
        assert_eq!(page.next_time, None);
    }

    #[test]
    fn nothing_is_due_without_an_up_to_but_the_next_time_is_known() {
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        twin.add(&mut index, 3, 7, "k");
        twin.add(&mut index, 4, 2, "k");
        let page = twin.due(&mut index, None, 10);
        assert!(page.timers.is_empty());
        assert_eq!((page.has_more, page.next_time), (false, Some(2)));
    }

    #[test]
    fn stale_bounds_after_deletes_are_corrected_and_never_hide_a_timer() {
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        twin.add(&mut index, 1, 1, "a");
        twin.add(&mut index, 1, 90, "b");
        twin.add(&mut index, 2, 50, "c");
        // Delete group 1's head behind the index's back, as a firing batch does.
        twin.remove(&Timer {
            domain: Domain::Event,
            time: 1,
            key_group: 1,
            key: b"a".to_vec(),
            name: Vec::new(),
        });
        let page = twin.due(&mut index, Some(10), 10);
        assert!(page.timers.is_empty());
        assert_eq!(
            page.next_time,
            Some(50),
            "exact, though group 1's bound said 1"
        );
        let page = twin.due(&mut index, Some(95), 1);
        assert_eq!(times(&page), [(50, 2)]);
        assert_eq!((page.has_more, page.next_time), (true, Some(90)));
    }

    #[test]
    fn the_byte_budget_cuts_a_page_but_always_returns_one_timer() {
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        let big = "x".repeat(1000);
        for (group, time) in [(1, 1), (2, 2), (3, 3)] {
            twin.add(&mut index, group, time, &big);
        }
        let page = twin.due_bytes(&mut index, Some(10), 100, 2100);
        assert_eq!(times(&page), [(1, 1), (2, 2)]);
        assert_eq!((page.has_more, page.next_time), (true, Some(3)));
        let page = twin.due_bytes(&mut index, Some(10), 100, 10);
        assert_eq!(times(&page), [(1, 1)], "one timer even over the budget");
    }

    #[test]
    fn a_page_cut_by_bytes_never_skips_an_earlier_timer_for_a_later_one() {
        // Group 1 holds a big early timer and group 2 small later ones: after the big one is left
        // out for the bytes, no later timer may take its place.
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        twin.add(&mut index, 1, 1, "small");
        twin.add(&mut index, 1, 2, &"x".repeat(5000));
        twin.add(&mut index, 2, 3, "small");
        let page = twin.due_bytes(&mut index, Some(10), 100, 1000);
        assert_eq!(times(&page), [(1, 1)]);
        assert_eq!((page.has_more, page.next_time), (true, Some(2)));
    }

    #[test]
    fn only_groups_that_can_hold_due_timers_are_read() {
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        for group in 0..1000 {
            twin.add(&mut index, group, 1000 + u64::from(group), "k");
        }
        twin.add(&mut index, 7, 5, "k");
        twin.reads = 0;
        let page = twin.due(&mut index, Some(10), 10);
        assert_eq!(times(&page), [(5, 7)]);
        assert_eq!(page.next_time, Some(1000));
        assert!(twin.reads <= 2, "read {} groups", twin.reads);
    }

    #[test]
    fn ties_in_time_are_ordered_by_group_key_and_name_whatever_the_page_size() {
        let (mut twin, mut index) = (Twin::default(), DomainIndex::default());
        for key in ["bb", "a", "c"] {
            twin.add(&mut index, 4, 9, key);
            twin.add(&mut index, 2, 9, key);
        }
        let all = twin.due(&mut index, Some(9), 100);
        let keys: Vec<_> = all
            .timers
            .iter()
            .map(|t| (t.key_group, String::from_utf8(t.key.clone()).unwrap()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for limit in 1..6 {
            let page = twin.due(&mut index, Some(9), limit);
            assert_eq!(page.timers, all.timers[..limit], "limit {limit}");
            assert!(page.has_more);
        }
    }
}
