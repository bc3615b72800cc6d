pub use kestrel;
