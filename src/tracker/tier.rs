//! Multitracker tiers (BEP 12) as a pure structure, plus a status de-duplicator.
//!
//! BEP 12: shuffle each tier once, try trackers of a tier in order, and move the one that
//! answered to the front of its tier. [`super::TrackerSet`] runs every tier in parallel (as
//! libtorrent's `announce_to_all_tiers` does) so one dead tier never delays peers from another;
//! inside a tier it follows the BEP order.

use rand::seq::SliceRandom;
use rand::Rng;

/// Most tiers and trackers per tier kept from a torrent or magnet (hostile input).
pub const MAX_TIERS: usize = 32;
pub const MAX_PER_TIER: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiers {
    tiers: Vec<Vec<String>>,
}

impl Tiers {
    /// Builds tiers, dropping empty ones and duplicate URLs, shuffling within each tier.
    pub fn new(tiers: Vec<Vec<String>>, rng: &mut impl Rng) -> Self {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for tier in tiers.into_iter().take(MAX_TIERS) {
            let mut t: Vec<String> = tier
                .into_iter()
                .filter(|u| seen.insert(u.clone()))
                .take(MAX_PER_TIER)
                .collect();
            if t.is_empty() {
                continue;
            }
            t.shuffle(rng);
            out.push(t);
        }
        Tiers { tiers: out }
    }

    /// One tier taken as already ordered (no shuffle).
    pub fn from_ordered(tier: Vec<String>) -> Self {
        Tiers {
            tiers: if tier.is_empty() {
                Vec::new()
            } else {
                vec![tier]
            },
        }
    }

    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The trackers of tier `t`, in the order they should be tried.
    pub fn tier(&self, t: usize) -> &[String] {
        self.tiers.get(t).map_or(&[], Vec::as_slice)
    }

    /// All trackers, tier by tier, in try order.
    pub fn all(&self) -> impl Iterator<Item = (usize, &str)> {
        self.tiers
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.iter().map(move |u| (i, u.as_str())))
    }

    /// Moves `url` to the front of its tier because it answered.
    pub fn promote(&mut self, url: &str) {
        for t in &mut self.tiers {
            if let Some(i) = t.iter().position(|u| u == url) {
                let u = t.remove(i);
                t.insert(0, u);
                return;
            }
        }
    }
}

/// Remembers each tracker's last status so an unchanged error is reported once, not on every
/// retry.
#[derive(Default, Debug)]
pub struct StatusDedup {
    last: std::collections::BTreeMap<String, Option<String>>,
}

impl StatusDedup {
    /// Returns true when `status` (None = ok) differs from the previous one for `url`.
    pub fn changed(&mut self, url: &str, status: Option<&str>) -> bool {
        let new = status.map(str::to_string);
        match self.last.get(url) {
            Some(old) if *old == new => false,
            _ => {
                self.last.insert(url.to_string(), new);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn urls(n: usize, p: &str) -> Vec<String> {
        (0..n).map(|i| format!("{p}{i}")).collect()
    }

    #[test]
    fn shuffle_is_seeded_and_keeps_tiers() {
        let input = vec![urls(8, "a"), vec![], urls(3, "b")];
        let a = Tiers::new(input.clone(), &mut rand::rngs::StdRng::seed_from_u64(1));
        let b = Tiers::new(input.clone(), &mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        let mut t0 = a.tier(0).to_vec();
        t0.sort();
        assert_eq!(t0, urls(8, "a"));
        // Different seeds shuffle differently (8! orders: a collision is negligible).
        let c = Tiers::new(input, &mut rand::rngs::StdRng::seed_from_u64(2));
        assert_ne!(a.tier(0), c.tier(0));
    }

    #[test]
    fn promote_moves_to_front_of_own_tier() {
        let mut t = Tiers::new(
            vec![urls(3, "a"), urls(3, "b")],
            &mut rand::rngs::StdRng::seed_from_u64(0),
        );
        let last = t.tier(1)[2].clone();
        t.promote(&last);
        assert_eq!(t.tier(1)[0], last);
        assert_eq!(t.tier(1).len(), 3);
        assert_eq!(t.all().count(), 6);
        assert_eq!(t.all().next().unwrap().0, 0);
    }

    #[test]
    fn duplicates_dropped() {
        let t = Tiers::new(
            vec![vec!["x".into(), "x".into()], vec!["x".into()]],
            &mut rand::rngs::StdRng::seed_from_u64(0),
        );
        assert_eq!(t.all().count(), 1);
    }

    #[test]
    fn status_reported_once_per_distinct_error() {
        let mut d = StatusDedup::default();
        assert!(d.changed("u", Some("timeout")));
        assert!(!d.changed("u", Some("timeout")));
        assert!(d.changed("u", Some("refused")));
        assert!(d.changed("u", None));
        assert!(!d.changed("u", None));
        assert!(d.changed("v", None));
    }
}
