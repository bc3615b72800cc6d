// Reading words stored in a 2-D integer texture (runtime/src/texture.rs): texel i — four
// words — is at (i % 4096, i / 4096). Dense weights pack f16 elements two per word, the lower
// index in the low half; f32 elements are their bits. `i` below is an element index.

fn tex_texel(t: texture_2d<u32>, i: u32) -> vec4<u32> {
    return textureLoad(t, vec2<u32>(i % 4096u, i / 4096u), 0);
}

// f16 elements i..i+3 (i a multiple of 4) and element i.
fn tex_f16x4(t: texture_2d<u32>, i: u32) -> vec4<f32> {
    let v = tex_texel(t, i / 8u);
    let w = select(v.xy, v.zw, i % 8u >= 4u);
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
fn tex_f16(t: texture_2d<u32>, i: u32) -> f32 { return unpack2x16float(tex_texel(t, i / 8u)[(i / 2u) % 4u])[i % 2u]; }

// f32 elements i..i+3 (i a multiple of 4) and element i.
fn tex_f32x4(t: texture_2d<u32>, i: u32) -> vec4<f32> { return bitcast<vec4<f32>>(tex_texel(t, i / 4u)); }
fn tex_f32(t: texture_2d<u32>, i: u32) -> f32 { return bitcast<f32>(tex_texel(t, i / 4u)[i % 4u]); }
