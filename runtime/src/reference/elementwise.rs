//! CPU references of the elementwise ops.

use crate::ops::elementwise::{Binary, Unary, broadcast_shape};

/// Applies a unary op.
pub fn unary(x: &[f32], op: Unary) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
            let r = match op {
                Unary::Relu => v.max(0.0),
                Unary::Sigmoid => sig(v),
                Unary::Silu => v * sig(v),
                Unary::GeluErf => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
                Unary::GeluTanh => 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh()),
                Unary::QuickGelu => v * sig(1.702 * v),
                Unary::Hardswish => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
                Unary::Hardsigmoid => (v + 3.0).clamp(0.0, 6.0) / 6.0,
                Unary::Scale { alpha, beta } => f64::from(alpha) * v + f64::from(beta),
            };
            r as f32
        })
        .collect()
}

/// Applies a binary op with numpy broadcasting; returns the values and the output shape.
pub fn binary(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], op: Binary) -> Option<(Vec<f32>, Vec<usize>)> {
    let shape = broadcast_shape(a_shape, b_shape)?;
    let n: usize = shape.iter().product();
    let index = |g: usize, s: &[usize]| -> usize {
        // Map the output multi-index onto `s` (right-aligned, size-1 dims broadcast).
        let mut rem = g;
        let mut idx = 0;
        let mut stride = 1;
        for d in (0..shape.len()).rev() {
            let c = rem % shape[d];
            rem /= shape[d];
            let off = shape.len() - s.len();
            if d >= off {
                let sd = s[d - off];
                if sd != 1 {
                    idx += c * stride;
                }
                stride *= sd;
            }
        }
        idx
    };
    let out = (0..n)
        .map(|g| {
            let (x, y) = (a[index(g, a_shape)], b[index(g, b_shape)]);
            match op {
                Binary::Add => x + y,
                Binary::Sub => x - y,
                Binary::Mul => x * y,
                Binary::Div => x / y,
                Binary::SiluMul => {
                    let v = f64::from(x);
                    (v / (1.0 + (-v).exp()) * f64::from(y)) as f32
                }
            }
        })
        .collect();
    Some((out, shape))
}
