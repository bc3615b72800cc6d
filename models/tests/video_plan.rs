//! Free Video-LLM's selection arithmetic against the official expressions
//! (fixtures/video/make_selection_fixture.py): sampling, middle positions, text-guided
//! frames with ties, RoI boxes with clamping and ties, token counts, spec parsing.

use std::path::PathBuf;

use kestrel_models::video::{DEFAULT_SPEC, Plan, RoiGeometry, RoiGrid, Spec, middle_positions, seq_frames, text_guided};
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video/selection.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("selection.json")).expect("json")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("int") as usize).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

#[test]
fn sampling_matches_get_seq_frames() {
    let f = fixture();
    let cases = f["sampling"].as_array().expect("sampling");
    assert!(cases.len() > 380);
    for c in cases {
        let (n, t) = (c["n"].as_u64().expect("n") as usize, c["t"].as_u64().expect("t") as usize);
        assert_eq!(seq_frames(n, t), usizes(&c["frames"]), "n = {n}, t = {t}");
    }
    assert_eq!(seq_frames(250, 50)[25], 127);
    assert_eq!(seq_frames(7, 50), [0, 1, 2, 3, 3, 4, 5]);
    assert!(seq_frames(0, 50).is_empty());
}

#[test]
fn middle_positions_match_linspace() {
    for c in fixture()["middle"].as_array().expect("middle") {
        let (t, m) = (c["t"].as_u64().expect("t") as usize, c["m"].as_u64().expect("m") as usize);
        assert_eq!(middle_positions(t, m), usizes(&c["positions"]), "t = {t}, m = {m}");
    }
    assert_eq!(middle_positions(50, 5), [0, 10, 20, 30, 40]);
}

#[test]
fn text_guided_frames_later_wins_ties() {
    let mut tied = 0;
    for c in fixture()["text_guided"].as_array().expect("text_guided") {
        let k = c["k"].as_u64().expect("k") as usize;
        let ours = text_guided(&f32s(&c["scores"]), k);
        // Always torch's stable sort; the official (unstable) sort too unless values tie at the
        // k-th place, where its choice is unspecified.
        assert_eq!(ours, usizes(&c["frames_stable"]), "{c}");
        if c["boundary_tie"].as_bool() == Some(true) {
            tied += 1;
        } else {
            assert_eq!(ours, usizes(&c["frames"]), "{c}");
        }
    }
    assert!(tied >= 2);
    assert_eq!(text_guided(&[1.0, 1.0, 1.0, 1.0], 2), [2, 3]);
}

#[test]
fn roi_boxes_match_roi_box() {
    let (mut exact, mut tied) = (0, 0);
    for c in fixture()["roi"].as_array().expect("roi") {
        let (h, w) = (c["h"].as_u64().expect("h") as usize, c["w"].as_u64().expect("w") as usize);
        let geo = RoiGeometry::new(w, c["ratio_tenths"].as_u64().expect("tenths") as f64 / 10.0).expect("geometry");
        assert_eq!((geo.h, geo.w), (h, w));
        let want = usizes(&c["box"]);
        assert_eq!([geo.box_h, geo.box_w], [want[2], want[3]]);
        // The official box from torch's own top positions.
        let top: Vec<u32> = usizes(&c["top"]).iter().map(|&i| i as u32).collect();
        assert_eq!(top.len(), geo.k);
        let b = geo.roi_box(&top);
        assert_eq!([b.top, b.left, b.height, b.width], [want[0], want[1], want[2], want[3]], "{h}x{w}");
        // Kestrel's own top-k (lower index wins ties) gives the same set unless values tie at
        // the k-th place, where torch's choice is unspecified.
        let scores = f32s(&c["scores"]);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut ours: Vec<usize> = order[..geo.k].to_vec();
        ours.sort_unstable();
        if c["boundary_tie"].as_bool() == Some(true) {
            tied += 1;
        } else {
            assert_eq!(ours, usizes(&c["top"]));
            exact += 1;
        }
    }
    assert!(exact >= 10 && tied >= 10, "{exact} untied, {tied} tied cases");
    let g = RoiGeometry::new(24, 0.8).expect("geometry");
    assert_eq!((g.h, g.w, g.k, g.box_h, g.box_w, g.tokens()), (12, 24, 230, 11, 21, 231));
    // The spatial reading (beyond the official code): 24 rows of 12 pooled pairs, 21x11 boxes.
    let s = RoiGeometry::with_grid(24, 0.8, RoiGrid::Spatial).expect("geometry");
    assert_eq!((s.h, s.w, s.k, s.box_h, s.box_w, s.tokens()), (24, 12, 230, 21, 11, 231));
    // All top positions in the bottom-right corner: shifted inside, never shrunk.
    let b = s.roi_box(&[24 * 12 - 1; 230]);
    assert_eq!((b.top, b.left, b.height, b.width), (3, 1, 21, 11));
}

#[test]
fn token_counts() {
    let spec = Spec::default();
    for c in fixture()["counts"].as_array().expect("counts") {
        let t = c["t"].as_u64().expect("t") as usize;
        let plan = Plan::new(&spec, t, 24).expect("plan");
        assert_eq!(plan.visual_tokens, c["visual_tokens"].as_u64().expect("n") as usize, "t = {t}");
    }
    let plan = Plan::new(&spec, 50, 24).expect("plan");
    assert_eq!(plan.visual_tokens, 2648);
    assert_eq!(plan.middle, [0, 10, 20, 30, 40]);
    assert!(!plan.fast_text_guided);
    assert!(Plan::new(&spec, 0, 24).is_err());
    assert!(Plan::new(&spec, 5, 23).is_err());
}

#[test]
fn spec_parsing() {
    let s = Spec::parse(DEFAULT_SPEC).expect("default spec");
    assert_eq!(s, Spec::default());
    assert_eq!(s.to_string(), DEFAULT_SPEC);
    assert!(s.crops());
    let s = Spec::parse("slow_2frms_spatial_1d_max_pool_roi10-middle_0frms_spatial_1d_max_pool_1x1-fast_8frms_2x3").expect("spec");
    assert_eq!((s.slow_frames, s.roi_tenths, s.middle_frames, s.fast_frames, s.fast_size), (2, 10, 0, 8, (2, 3)));
    assert!(!s.crops());
    for bad in [
        "",
        "slowfast_3frms_spatial_1d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4",
        "slow_3frms_spatial_2d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4",
        "slow_3frms_spatial_1d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4 ",
        "slow_3frms_spatial_1d_max_pool_roi0-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4",
        "slow_3frms_spatial_1d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_0x4",
        "slow_frms_spatial_1d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4",
        "slow_99999999999999999999999frms_spatial_1d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4",
    ] {
        let err = Spec::parse(bad).expect_err(bad);
        assert!(err.to_string().contains("spec"), "{err}");
    }
}
