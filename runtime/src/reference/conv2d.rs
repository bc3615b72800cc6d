//! CPU reference of 2-D convolution (NCHW, PyTorch semantics, f64 accumulation).

use crate::ops::conv2d::Conv2dOptions;

/// Convolves `x` (`[B, Cin, H, W]`) with `w` (`[Cout, Cin/groups, kh, kw]`) plus an optional
/// bias; returns the values and the output shape `[B, Cout, OH, OW]`.
pub fn conv2d(
    x: &[f32],
    x_shape: [usize; 4],
    w: &[f32],
    w_shape: [usize; 4],
    bias: Option<&[f32]>,
    opts: &Conv2dOptions,
) -> (Vec<f32>, [usize; 4]) {
    let [batch, cin, h, wd] = x_shape;
    let [cout, cin_g, kh, kw] = w_shape;
    let (sh, sw) = opts.stride;
    let (ph, pw) = opts.padding;
    let cout_g = cout / opts.groups;
    let oh = (h + 2 * ph - kh) / sh + 1;
    let ow = (wd + 2 * pw - kw) / sw + 1;
    let mut out = Vec::with_capacity(batch * cout * oh * ow);
    for b in 0..batch {
        for co in 0..cout {
            let g = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |bv| f64::from(bv[co]));
                    for ci in 0..cin_g {
                        let c = g * cin_g + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                // Input coordinates with the padding offset removed.
                                let (iy, ix) = (oy * sh + ky, ox * sw + kx);
                                if iy < ph || ix < pw || iy - ph >= h || ix - pw >= wd {
                                    continue;
                                }
                                let xv = x[((b * cin + c) * h + iy - ph) * wd + ix - pw];
                                let wv = w[((co * cin_g + ci) * kh + ky) * kw + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    (out, [batch, cout, oh, ow])
}
