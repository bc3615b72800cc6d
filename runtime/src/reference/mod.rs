//! Plain Rust CPU references for every op: the ground truth of the kernel tests and of the
//! op-by-op backend check. Written for clarity, not speed; all arithmetic in f64 where it is cheap.

pub mod elementwise;
pub mod matmul;
