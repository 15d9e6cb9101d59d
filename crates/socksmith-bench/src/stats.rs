//! Small statistics: percentiles of latency samples and the median and spread of repeats.
//!
//! Pure functions, no I/O. Percentiles use the nearest-rank method on sorted samples.

use serde::Serialize;

/// The nearest-rank `p`-th percentile (0 < p <= 100) of samples sorted ascending.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied()
}

/// One figure over the repeats: the median and the spread (min and max).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The median of the repeats (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest repeat.
    pub min: f64,
    /// The largest repeat.
    pub max: f64,
    /// Every repeat, in run order.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarizes the repeats; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples: samples.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn median_and_spread_of_repeats() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).expect("three samples");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.samples, vec![3.0, 1.0, 2.0]);
        let even = Summary::of(&[1.0, 4.0, 2.0, 3.0]).expect("four samples");
        assert_eq!(even.median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }
}
