//! What this node has: CPUs and memory from the OS, GPUs from NVML (or stand-ins), each
//! overridable as Slurm's `SlurmdParameters=config_overrides` allows; and what its GPUs are
//! doing now, for accounting (gpuacct.rs).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use chorus_core::node::GpuInfo;
use nvml_wrapper::Nvml;
use tracing::warn;

/// The source of a node's GPU list. The real one asks NVML; tests use stand-ins.
pub trait GpuInventory: Send + Sync {
    fn name(&self) -> &'static str;
    fn gpus(&self) -> Vec<GpuInfo>;
    /// The device node of each GPU, by index: what the device cgroup allows or denies.
    fn devices(&self) -> Vec<(u32, PathBuf)>;
    /// What each GPU of `indices` is doing now, in that order. `None` when that cannot be read
    /// (no NVML driver, an index this node does not have): the caller skips the sample.
    fn sample(&self, indices: &[u32]) -> Option<Vec<GpuSample>>;
}

/// One GPU at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSample {
    pub index: u32,
    /// Percent of the last sample period in which a kernel ran (NVML's `utilization.gpu`).
    pub util_pct: u32,
    /// Memory in use on the device, MiB.
    pub mem_used_mb: u64,
}

/// A GPU's device node as the kernel numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuDevice {
    pub index: u32,
    pub major: u64,
    pub minor: u64,
}

/// The major and minor numbers of each GPU's device node. A GPU whose node is missing or not
/// a character device cannot be isolated: the error names it.
pub fn gpu_devices(inv: &dyn GpuInventory) -> Result<Vec<GpuDevice>, String> {
    inv.devices()
        .into_iter()
        .map(|(index, path)| {
            let st = nix::sys::stat::stat(&path)
                .map_err(|e| format!("GPU {index}: {}: {e}", path.display()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
                return Err(format!("GPU {index}: {} is not a character device", path.display()));
            }
            let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            Ok(GpuDevice { index, major: u64::from(major), minor: u64::from(minor) })
        })
        .collect()
}

/// GPUs as NVIDIA's management library reports them. Without a driver the list is empty and
/// the reason is logged once.
#[derive(Debug, Default)]
pub struct NvmlInventory {
    /// Opened by the first sample and kept (`None`: no driver): NVML's start is too slow to
    /// repeat every few seconds for every job.
    nvml: OnceLock<Option<Nvml>>,
    /// A sample has failed and said why; later failures are not logged.
    sample_failed: AtomicBool,
}

impl GpuInventory for NvmlInventory {
    fn name(&self) -> &'static str {
        "gpu/nvml"
    }

    fn gpus(&self) -> Vec<GpuInfo> {
        match nvml_gpus() {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "NVML unavailable: this node offers no GPUs");
                vec![]
            }
        }
    }

    /// `/dev/nvidiaN`, N being the GPU's minor number as NVML reports it.
    fn devices(&self) -> Vec<(u32, PathBuf)> {
        let Ok(nvml) = nvml_wrapper::Nvml::init() else { return vec![] };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let minor = nvml.device_by_index(i).ok()?.minor_number().ok()?;
                Some((i, PathBuf::from(format!("/dev/nvidia{minor}"))))
            })
            .collect()
    }

    /// NVML's `utilization.gpu` and the memory the device has in use (`memory_info().used`,
    /// which includes what the driver sets aside).
    fn sample(&self, indices: &[u32]) -> Option<Vec<GpuSample>> {
        let nvml = self
            .nvml
            .get_or_init(|| match Nvml::init() {
                Ok(n) => Some(n),
                Err(e) => {
                    warn!(error = %e, "NVML unavailable: GPU use is not recorded");
                    None
                }
            })
            .as_ref()?;
        let read = |index: u32| -> Result<GpuSample, nvml_wrapper::error::NvmlError> {
            let d = nvml.device_by_index(index)?;
            Ok(GpuSample {
                index,
                util_pct: d.utilization_rates()?.gpu,
                mem_used_mb: d.memory_info()?.used / (1024 * 1024),
            })
        };
        match indices.iter().map(|&i| read(i)).collect() {
            Ok(s) => Some(s),
            Err(e) => {
                if !self.sample_failed.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, ?indices, "GPU use unreadable: samples skipped (logged once)");
                }
                None
            }
        }
    }
}

fn nvml_gpus() -> Result<Vec<GpuInfo>, nvml_wrapper::error::NvmlError> {
    let nvml = nvml_wrapper::Nvml::init()?;
    let driver = nvml.sys_driver_version()?;
    let mut out = vec![];
    for i in 0..nvml.device_count()? {
        let d = nvml.device_by_index(i)?;
        out.push(GpuInfo {
            index: i,
            uuid: d.uuid()?,
            model: d.name()?,
            memory_mb: d.memory_info()?.total / (1024 * 1024),
            driver: driver.clone(),
        });
    }
    Ok(out)
}

/// The driver version stand-in GPUs report.
pub const FAKE_DRIVER: &str = "0.0-fake";

/// `N` stand-in GPUs (`--node-gpus N`), for clusters shaped like real ones on a laptop.
/// With `devices`, GPU `i` is the character device `DIR/fakegpu<i>` (made by the operator or
/// a test with mknod), so the device cgroup can be exercised without a GPU.
#[derive(Debug, Clone)]
pub struct FakeInventory {
    pub count: u32,
    pub model: String,
    pub devices: Option<PathBuf>,
    /// What every stand-in GPU reports when sampled; `None`: nothing, as NVML without a driver.
    pub usage: Option<FakeUsage>,
}

/// The fixed use a stand-in GPU reports (`--node-gpu-fake-usage UTIL:MEM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeUsage {
    pub util_pct: u32,
    pub mem_used_mb: u64,
}

impl FakeUsage {
    /// `UTIL:MEM`: percent (0-100) and MiB, e.g. `40:1000`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected UTIL:MEM, percent (0-100) and MiB, e.g. 40:1000");
        let (util, mem) = s.split_once(':').ok_or_else(bad)?;
        let util_pct: u32 = util.parse().map_err(|_| bad())?;
        let mem_used_mb = mem.parse().map_err(|_| bad())?;
        if util_pct > 100 {
            return Err(bad());
        }
        Ok(Self { util_pct, mem_used_mb })
    }
}

impl GpuInventory for FakeInventory {
    fn name(&self) -> &'static str {
        "gpu/fake"
    }

    fn gpus(&self) -> Vec<GpuInfo> {
        (0..self.count)
            .map(|i| GpuInfo {
                index: i,
                uuid: format!("GPU-fake-{i:04}"),
                model: self.model.clone(),
                memory_mb: 16 * 1024,
                driver: FAKE_DRIVER.into(),
            })
            .collect()
    }

    fn devices(&self) -> Vec<(u32, PathBuf)> {
        let Some(dir) = &self.devices else { return vec![] };
        (0..self.count).map(|i| (i, dir.join(format!("fakegpu{i}")))).collect()
    }

    fn sample(&self, indices: &[u32]) -> Option<Vec<GpuSample>> {
        let u = self.usage?;
        indices
            .iter()
            .map(|&index| {
                (index < self.count).then_some(GpuSample {
                    index,
                    util_pct: u.util_pct,
                    mem_used_mb: u.mem_used_mb,
                })
            })
            .collect()
    }
}

/// CPUs the OS gives this process.
pub fn os_cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// `MemTotal` from /proc/meminfo, in MB.
pub fn os_mem_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_total_kb(&s))
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

fn parse_meminfo_total_kb(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Seconds since the epoch at which this machine booted.
pub fn boot_time() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_kb() {
        assert_eq!(
            parse_meminfo_total_kb("MemTotal:       24570636 kB\nMemFree: 1 kB\n"),
            Some(24_570_636)
        );
        assert_eq!(parse_meminfo_total_kb("garbage"), None);
    }

    #[test]
    fn nvml_without_a_driver_gives_no_gpus_and_does_not_panic() {
        // On machines without the NVIDIA driver this is the path taken; with one, GPUs appear.
        let gpus = NvmlInventory::default().gpus();
        assert!(gpus.iter().all(|g| !g.uuid.is_empty()));
    }

    fn fake(count: u32, usage: Option<FakeUsage>) -> FakeInventory {
        FakeInventory { count, model: "A100".into(), devices: None, usage }
    }

    #[test]
    fn stand_in_gpus_have_distinct_indices() {
        let g = fake(3, None).gpus();
        assert_eq!(g.iter().map(|g| g.index).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    /// What every inventory must do, whatever its GPUs.
    fn conforms(inv: &dyn GpuInventory) {
        let gpus = inv.gpus();
        let indices: Vec<u32> = gpus.iter().map(|g| g.index).collect();
        let distinct: std::collections::BTreeSet<_> = indices.iter().collect();
        assert_eq!(distinct.len(), indices.len(), "{}: GPU indices repeat", inv.name());
        for (i, _) in inv.devices() {
            assert!(indices.contains(&i), "{}: device for unknown GPU {i}", inv.name());
        }
        if let Some(s) = inv.sample(&indices) {
            assert_eq!(s.iter().map(|s| s.index).collect::<Vec<_>>(), indices, "{}", inv.name());
            for (s, g) in s.iter().zip(&gpus) {
                assert!(s.util_pct <= 100, "{}: {s:?}", inv.name());
                assert!(s.mem_used_mb <= g.memory_mb, "{}: {s:?} of {g:?}", inv.name());
            }
        }
        let missing = indices.iter().max().map_or(0, |m| m + 1);
        assert_eq!(inv.sample(&[missing]), None, "{}: a GPU it does not have", inv.name());
    }

    #[test]
    fn every_inventory_conforms() {
        conforms(&NvmlInventory::default());
        conforms(&fake(0, None));
        conforms(&fake(2, None));
        conforms(&fake(2, Some(FakeUsage { util_pct: 40, mem_used_mb: 1000 })));
    }

    #[test]
    fn stand_ins_report_their_fixed_use_or_nothing() {
        let u = FakeUsage { util_pct: 40, mem_used_mb: 1000 };
        let s = fake(4, Some(u)).sample(&[1, 3]).expect("configured");
        assert_eq!(
            s,
            [
                GpuSample { index: 1, util_pct: 40, mem_used_mb: 1000 },
                GpuSample { index: 3, util_pct: 40, mem_used_mb: 1000 },
            ]
        );
        assert_eq!(fake(4, None).sample(&[1]), None);
    }

    #[test]
    fn nvml_without_a_driver_samples_nothing() {
        // With a driver and GPU 0 present, a sample of it is read instead.
        let inv = NvmlInventory::default();
        if inv.gpus().is_empty() {
            assert_eq!(inv.sample(&[0]), None);
            assert_eq!(inv.sample(&[0]), None, "and again, without retrying NVML");
        }
    }

    #[test]
    fn fake_usage_flag_is_util_colon_mib() {
        assert_eq!(FakeUsage::parse("40:1000"), Ok(FakeUsage { util_pct: 40, mem_used_mb: 1000 }));
        assert_eq!(FakeUsage::parse("0:0"), Ok(FakeUsage { util_pct: 0, mem_used_mb: 0 }));
        for bad in ["101:5", "40", "40:", ":5", "a:b", "40:1G"] {
            assert!(FakeUsage::parse(bad).is_err(), "{bad}");
        }
    }
}
