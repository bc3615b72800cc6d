//! Plain Rust CPU references for every op: the ground truth of the kernel tests and of the
//! op-by-op backend check. Written for clarity, not speed; all arithmetic in f64 where it is cheap.

pub mod attention;
pub mod conv2d;
pub mod elementwise;
pub mod gather;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod qmatmul;
pub mod reduce;
pub mod select;
pub mod sla;
pub mod softmax;
pub mod window_attention;
