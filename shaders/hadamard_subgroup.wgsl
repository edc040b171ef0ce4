// The subgroup variant of hadamard.wgsl, appended to it and compiled only on
// devices with Features::SUBGROUP whose smallest subgroup holds a whole
// workgroup (WG ≤ subgroup_min_size). Everything stays in layout A: the
// butterflies on index bits log2(E)..log2(d) pair lanes that differ in one
// bit, so subgroupShuffleXor replaces the workgroup-memory exchanges, and
// the reductions are subgroupAdd/subgroupMax. Only the permutation still
// goes through workgroup memory. The lane id is the thread index.

// log2(WG).
override LOG_WG: u32;

// Butterflies on lane bits 0..LOG_WG: the lower lane of each pair gets
// a + b, the upper b' = a − b, where a is the lower lane's value.
fn xor_stages(x: ptr<function, array<f32, MAX_E>>, lane: u32) {
    for (var q = 0u; q < LOG_WG; q++) {
        let m = 1u << q;
        let upper = (lane & m) != 0u;
        for (var r = 0u; r < E; r++) {
            let mine = (*x)[r];
            let other = subgroupShuffleXor(mine, m);
            if upper {
                (*x)[r] = other - mine;
            } else {
                (*x)[r] = mine + other;
            }
        }
    }
}

// The full unnormalised Walsh–Hadamard transform in layout A.
fn fwht_subgroup(x: ptr<function, array<f32, MAX_E>>, lane: u32) {
    butterflies(x, 0u);
    xor_stages(x, lane);
}

@compute @workgroup_size(WG)
fn encode_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let v = wg.x + wg.y * params.groups_x;
    if v >= params.n {
        return;
    }
    var x: array<f32, MAX_E>;
    let p = prescale(subgroupMax(load_a(&x, v, lane)));
    let rr = sqrt(subgroupAdd(prescale_a(&x, p.x)));
    var inv = 0.0;
    if rr > 0.0 {
        inv = 1.0 / rr;
    }
    scale_a(&x, inv);
    let norm = rr * p.y;

    signs_a(&x, lane, 0u);
    fwht_subgroup(&x, lane);
    exchange(&x, lane, false, false, 0u);
    signs_a(&x, lane, 1u);
    fwht_subgroup(&x, lane);
    signs_a(&x, lane, 2u);
    fwht_subgroup(&x, lane);

    let sums = quantise_pack_a(&x, v, lane);
    var s = norm;
    if SCALE_LS {
        s = norm * (subgroupAdd(sums.x) / subgroupAdd(sums.y));
    }
    if lane == 0u {
        write_scale(v, s);
    }
}

@compute @workgroup_size(WG)
fn decode_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let v = wg.x + wg.y * params.groups_x;
    if v >= params.n {
        return;
    }
    var x: array<f32, MAX_E>;
    unpack_a(&x, v, lane);
    let s = read_scale(v);

    fwht_subgroup(&x, lane);
    signs_a(&x, lane, 2u);
    fwht_subgroup(&x, lane);
    signs_a(&x, lane, 1u);
    exchange(&x, lane, false, false, D);
    fwht_subgroup(&x, lane);
    signs_a(&x, lane, 0u);

    let base = params.data_offset + v * params.data_stride;
    for (var r = 0u; r < E; r++) {
        store_data(base + index_a(lane, r), output_value(x[r], s));
    }
}
