//! [`Quant`]: the one weight-storage choice of Kestrel — `--quant` of every CLI command, the
//! `quant` option of the app front types and the C ABI, the storage a Kestrel file records.

use crate::quant::QuantScheme;
use crate::weights::WeightDType;

/// How a model's weights are stored on the GPU.
///
/// Linear layers take the choice; the few tensors no kernel reads quantised (norms, biases,
/// convolutions, position tables) stay f32, or f16 under [`Quant::F16`]. Layers narrower than
/// one quantisation block stay f32 under `W8`/`W4`. Models may keep a part at a higher
/// precision than asked where a lower one loses too much (each documents where).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quant {
    /// As the file stores them where a kernel reads that form (GGUF Q4_0/Q4_1/Q8_0, Kestrel
    /// w8/w4, f32, f16); other stored types (bf16, K-quants) become f16, and weights that are
    /// transformed at load (folded norms) f32. Not a storage a Kestrel file can record.
    Native,
    /// Everything f32.
    F32,
    /// Everything f16.
    F16,
    /// int8 per output channel ([`QuantScheme::W8`]).
    W8,
    /// int4 in groups of 32 along the input ([`QuantScheme::W4`]).
    W4,
}

impl Quant {
    /// Every choice.
    pub const ALL: [Quant; 5] = [Quant::Native, Quant::F32, Quant::F16, Quant::W8, Quant::W4];

    /// Every storage: the choices a conversion writes and a Kestrel file records (all but
    /// [`Quant::Native`]).
    pub const STORAGE: [Quant; 4] = [Quant::F32, Quant::F16, Quant::W8, Quant::W4];

    /// Lower-case name (`native`, `f32`, `f16`, `w8`, `w4`), as `--quant` and the Kestrel file
    /// metadata write it.
    pub const fn name(self) -> &'static str {
        match self {
            Quant::Native => "native",
            Quant::F32 => "f32",
            Quant::F16 => "f16",
            Quant::W8 => "w8",
            Quant::W4 => "w4",
        }
    }

    /// The choice of a [`name`](Self::name), or `None`.
    pub fn from_name(name: &str) -> Option<Quant> {
        Quant::ALL.into_iter().find(|q| q.name() == name)
    }

    /// The choice of a [`name`](Self::name) that is a storage ([`Quant::Native`] is not), or
    /// `None`: what a conversion writes and a Kestrel file records.
    pub fn storage_from_name(name: &str) -> Option<Quant> {
        Quant::STORAGE.into_iter().find(|q| q.name() == name)
    }

    /// The scheme quantised weights use, `None` for the float choices and [`Quant::Native`].
    pub const fn scheme(self) -> Option<QuantScheme> {
        match self {
            Quant::W8 => Some(QuantScheme::W8),
            Quant::W4 => Some(QuantScheme::W4),
            Quant::Native | Quant::F32 | Quant::F16 => None,
        }
    }

    /// The stored type of every tensor that is not quantised when weights are converted (f32
    /// unless [`Quant::F16`]).
    pub const fn float_dtype(self) -> WeightDType {
        match self {
            Quant::F16 => WeightDType::F16,
            _ => WeightDType::F32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_native_is_no_storage() {
        for q in Quant::ALL {
            assert_eq!(Quant::from_name(q.name()), Some(q));
        }
        assert_eq!(Quant::storage_from_name("native"), None);
        assert_eq!(Quant::storage_from_name("w4"), Some(Quant::W4));
        assert_eq!(Quant::from_name("q4_0"), None);
    }
}
