//! A buffer pool that reuses GPU allocations by size class.
//!
//! Freed tensors return their buffer here; the next request of the same size class gets it
//! back without a driver allocation. All GPU work runs on one queue in submission order, so a
//! buffer returned after its last recorded use may be reused by any later work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::memory::MemoryMeter;

/// What a pooled buffer is used for; buffers of different kinds are never mixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Tensor storage: `STORAGE | COPY_SRC | COPY_DST`.
    Storage,
    /// Kernel parameters: `UNIFORM | COPY_DST`.
    Uniform,
}

impl BufferKind {
    fn usage(self, mappable_storage: bool) -> wgpu::BufferUsages {
        match self {
            BufferKind::Storage if mappable_storage => {
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_WRITE
            }
            BufferKind::Storage => wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            BufferKind::Uniform => wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        }
    }
}

/// Counters describing the pool's effectiveness.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolStats {
    /// Requests served by a fresh driver allocation.
    pub allocations: u64,
    /// Requests served from the free list.
    pub reuses: u64,
    /// Bytes currently held in free lists.
    pub free_bytes: u64,
}

#[derive(Default)]
struct PoolInner {
    free: HashMap<(u64, BufferKind), Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

/// Size-class buffer pool shared by all tensors of a [`crate::Context`].
#[derive(Clone, Default)]
pub struct BufferPool {
    inner: Arc<Mutex<PoolInner>>,
    /// Storage buffers are created host-mappable (`MAP_WRITE`), so new tensors can be filled
    /// in place instead of through a staging copy (see [`BufferPool::get_filled`]).
    mappable_storage: bool,
    /// Counts every buffer the pool holds, on loan or free, until [`BufferPool::trim`].
    meter: Arc<MemoryMeter>,
}

/// A buffer on loan from the pool; it goes back when dropped.
pub struct PooledBuffer {
    buffer: wgpu::Buffer,
    class: u64,
    kind: BufferKind,
    pool: BufferPool,
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuffer").field("class", &self.class).field("kind", &self.kind).finish()
    }
}

impl PooledBuffer {
    /// The wgpu buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Allocated size in bytes (the size class, ≥ what was asked for).
    pub fn size(&self) -> u64 {
        self.class
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        inner.stats.free_bytes += self.class;
        inner.free.entry((self.class, self.kind)).or_default().push(self.buffer.clone());
    }
}

/// Rounds a request up to its size class: multiples of 256 bytes up to 64 KiB, then eight
/// classes per power of two (at most 12.5 % waste).
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    if bytes <= 65536 {
        return bytes.div_ceil(256) * 256;
    }
    let pow = 63 - bytes.leading_zeros() as u64; // floor(log2)
    let step = 1u64 << (pow - 3);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    /// An empty pool; `mappable_storage` makes storage buffers host-mappable, which needs the
    /// device feature `MAPPABLE_PRIMARY_BUFFERS`.
    pub(crate) fn new(mappable_storage: bool, meter: Arc<MemoryMeter>) -> BufferPool {
        BufferPool { inner: Arc::default(), mappable_storage, meter }
    }

    /// Whether storage buffers are host-mappable, i.e. [`BufferPool::get_filled`] writes in place.
    pub fn mappable_storage(&self) -> bool {
        self.mappable_storage
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Returns a buffer of at least `bytes` bytes, reusing a freed one of the same class.
    pub fn get(&self, device: &wgpu::Device, bytes: u64, kind: BufferKind) -> Arc<PooledBuffer> {
        let class = size_class(bytes);
        let reused = {
            let mut inner = self.lock();
            let found = inner.free.get_mut(&(class, kind)).and_then(|v| v.pop());
            if found.is_some() {
                inner.stats.reuses += 1;
                inner.stats.free_bytes -= class;
            } else {
                inner.stats.allocations += 1;
            }
            found
        };
        let buffer = reused.unwrap_or_else(|| {
            self.meter.add(class);
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kestrel-pool"),
                size: class,
                usage: kind.usage(self.mappable_storage),
                mapped_at_creation: false,
            })
        });
        Arc::new(PooledBuffer { buffer, class, kind, pool: self.clone() })
    }

    /// A new storage buffer of at least `bytes` bytes whose first `data.len()` bytes are
    /// `data`, written through a mapping at creation: one copy from `data` into the buffer's
    /// memory, where a queue write would copy into a staging buffer and then again on the
    /// device. Only for pools with [`BufferPool::mappable_storage`] (otherwise `None`); the
    /// buffer is fresh, so no earlier GPU work can still be using it. `data.len()` must be a
    /// multiple of 4 and at most `bytes`.
    pub fn get_filled(&self, device: &wgpu::Device, bytes: u64, data: &[u8]) -> Option<Arc<PooledBuffer>> {
        if !self.mappable_storage || data.len() as u64 > bytes || !data.len().is_multiple_of(4) {
            return None;
        }
        let class = size_class(bytes);
        self.lock().stats.allocations += 1;
        self.meter.add(class);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kestrel-pool"),
            size: class,
            usage: BufferKind::Storage.usage(true),
            mapped_at_creation: true,
        });
        let filled = match buffer.slice(..data.len() as u64).get_mapped_range_mut() {
            Ok(mut view) => {
                view.copy_from_slice(data);
                true
            }
            Err(e) => {
                log::warn!("kestrel: mapping a new buffer failed ({e}); uploading through the queue");
                false
            }
        };
        buffer.unmap();
        if !filled {
            self.meter.sub(class);
            return None;
        }
        Some(Arc::new(PooledBuffer { buffer, class, kind: BufferKind::Storage, pool: self.clone() }))
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Releases every free buffer back to the driver (apps call it on a memory warning; the
    /// next pass allocates afresh).
    pub fn trim(&self) {
        let mut inner = self.lock();
        inner.free.clear();
        self.meter.sub(inner.stats.free_bytes);
        inner.stats.free_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_bounded_waste() {
        for bytes in [1u64, 255, 256, 257, 65536, 65537, 1 << 20, (1 << 20) + 1, 300 << 20] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c.is_multiple_of(16));
            assert!(c as f64 <= (bytes.max(16) as f64) * 1.125 + 256.0, "{bytes} -> {c}");
        }
        assert_eq!(size_class(1000), size_class(1001));
    }
}
