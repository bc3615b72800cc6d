//! How much GPU memory Kestrel holds: every pooled buffer (on loan or in a free list) and every
//! weight texture, with the high-water mark since the last reset. Apps read it to plan for
//! phones' 2–4 GB ([`Context::peak_gpu_bytes`](crate::Context::peak_gpu_bytes)); the profiler
//! reports it as `peak_gpu_bytes`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes held and their high-water mark, shared by the buffer pool and the textures of one
/// context.
#[derive(Debug, Default)]
pub struct MemoryMeter {
    held: AtomicU64,
    peak: AtomicU64,
}

impl MemoryMeter {
    /// Counts `bytes` more as held, raising the peak when passed.
    pub(crate) fn add(&self, bytes: u64) {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(held, Ordering::Relaxed);
    }

    /// Counts `bytes` as released.
    pub(crate) fn sub(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The most bytes held at once since the context was made or [`MemoryMeter::reset_peak`].
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new high-water mark from what is held now.
    pub fn reset_peak(&self) {
        self.peak.store(self.held(), Ordering::Relaxed);
    }
}
