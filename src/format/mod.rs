//! Files: the `.tqv` vector container ([`tqv`]) and `.npy` arrays ([`npy`]),
//! and the rules every reader and writer of the crate follows: inputs are
//! read only as far as their header declares ([`input`]), outputs are
//! written atomically and only to regular files or standard output
//! ([`output`]).

pub(crate) mod input;
pub mod npy;
pub mod output;
pub mod tqv;

pub use output::{check_distinct, write_atomic};
