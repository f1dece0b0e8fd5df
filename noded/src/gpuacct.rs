//! GPU accounting: what a job's GPUs did while it ran (`sacct`'s `gres/gpumem`,
//! `gres/gpuutil`).
//!
//! ```text
//!   job with GPUs starts ──every `every` (the first one `every` after the start)──▶
//!       inventory.sample(the job's GPUs) ──Some──▶ sum over the GPUs ──▶ GpuTally::add
//!                                         ──None (no NVML, a GPU unreadable)──▶ skipped
//!   job ends ──GpuTally::usage──▶ peak and mean of the sums ──▶ Usage.gpu (None: no sample)
//! ```
//!
//! The first sample waits one interval: NVML's utilisation covers the moments before it is
//! read, which at the start belong to whatever ran before the job. A job shorter than the
//! interval therefore records no GPU use.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::job::GpuUsage;

use crate::inventory::{GpuInventory, GpuSample};

/// Which inventory to sample and how often.
#[derive(Clone)]
pub struct GpuAccounting {
    pub inventory: Arc<dyn GpuInventory>,
    pub every: Duration,
}

impl fmt::Debug for GpuAccounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuAccounting")
            .field("inventory", &self.inventory.name())
            .field("every", &self.every)
            .finish()
    }
}

/// Running totals of a job's samples: enough for the peak and the mean, however long it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuTally {
    samples: u64,
    mem_sum: u64,
    util_sum: u64,
    mem_max: u64,
    util_max: u32,
}

impl GpuTally {
    /// Adds one sample of the job's GPUs (all of them, taken together).
    pub fn add(&mut self, gpus: &[GpuSample]) {
        let mem: u64 = gpus.iter().map(|g| g.mem_used_mb).sum();
        let util: u32 = gpus.iter().map(|g| g.util_pct).sum();
        self.samples += 1;
        self.mem_sum = self.mem_sum.saturating_add(mem);
        self.util_sum = self.util_sum.saturating_add(u64::from(util));
        self.mem_max = self.mem_max.max(mem);
        self.util_max = self.util_max.max(util);
    }

    /// Peak and mean (rounded to the nearest whole number) of the sums; `None` before any
    /// sample.
    pub fn usage(&self) -> Option<GpuUsage> {
        let n = self.samples;
        let mean = |sum: u64| (sum + n / 2) / n;
        (n > 0).then(|| GpuUsage {
            mem_max_mb: self.mem_max,
            mem_ave_mb: mean(self.mem_sum),
            util_max_pct: self.util_max,
            util_ave_pct: u32::try_from(mean(self.util_sum)).unwrap_or(u32::MAX),
        })
    }
}

/// The usage of a whole series of samples (what [`GpuTally`] gives when fed them in order).
pub fn gpu_usage<'a>(samples: impl IntoIterator<Item = &'a [GpuSample]>) -> Option<GpuUsage> {
    let mut t = GpuTally::default();
    samples.into_iter().for_each(|s| t.add(s));
    t.usage()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, util_pct: u32, mem_used_mb: u64) -> GpuSample {
        GpuSample { index, util_pct, mem_used_mb }
    }

    #[test]
    fn no_sample_no_usage() {
        assert_eq!(gpu_usage([]), None);
    }

    #[test]
    fn one_gpu_peak_and_mean_over_time() {
        let s = [[gpu(0, 10, 100)], [gpu(0, 90, 3000)], [gpu(0, 50, 2000)]];
        assert_eq!(
            gpu_usage(s.iter().map(|s| &s[..])),
            Some(GpuUsage {
                mem_max_mb: 3000,
                mem_ave_mb: 1700,
                util_max_pct: 90,
                util_ave_pct: 50
            })
        );
    }

    #[test]
    fn gpus_of_one_sample_are_summed_before_the_peak_is_taken() {
        // GPU 0 peaks in the first sample, GPU 1 in the second: the job never held 8000 MiB
        // at once, and its peak is the larger sum, 6000.
        let s = [[gpu(0, 100, 5000), gpu(1, 0, 1000)], [gpu(0, 20, 1000), gpu(1, 100, 3000)]];
        assert_eq!(
            gpu_usage(s.iter().map(|s| &s[..])),
            Some(GpuUsage {
                mem_max_mb: 6000,
                mem_ave_mb: 5000,
                util_max_pct: 120,
                util_ave_pct: 110
            })
        );
    }

    #[test]
    fn two_busy_gpus_are_two_hundred_percent() {
        let s = [gpu(0, 100, 40_000), gpu(1, 100, 40_000)];
        let u = gpu_usage([&s[..]]).expect("one sample");
        assert_eq!((u.util_max_pct, u.util_ave_pct), (200, 200));
        assert_eq!((u.mem_max_mb, u.mem_ave_mb), (80_000, 80_000));
    }

    #[test]
    fn means_round_to_the_nearest_whole_number() {
        let s = [[gpu(0, 1, 1)], [gpu(0, 2, 2)]];
        let u = gpu_usage(s.iter().map(|s| &s[..])).expect("samples");
        assert_eq!((u.util_ave_pct, u.mem_ave_mb), (2, 2), "1.5 rounds up");
        let s = [[gpu(0, 1, 1)], [gpu(0, 1, 1)], [gpu(0, 2, 2)]];
        let u = gpu_usage(s.iter().map(|s| &s[..])).expect("samples");
        assert_eq!((u.util_ave_pct, u.mem_ave_mb), (1, 1), "1.33 rounds down");
    }

    #[test]
    fn idle_gpus_are_recorded_as_zero_not_as_nothing() {
        let s = [gpu(0, 0, 0)];
        assert_eq!(gpu_usage([&s[..]]), Some(GpuUsage::default()));
    }
}
