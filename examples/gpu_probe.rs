use std::sync::Arc;
use std::time::Instant;
use turboquant3d::gpu::{AdapterPolicy, GpuCodec, GpuContext};
use turboquant3d::{Quantizer, QuantizerConfig, RotationKind};
fn main() {
    let codec = Arc::new(GpuCodec::new(
        GpuContext::request(AdapterPolicy::AllowSoftware).unwrap(),
    ));
    for bits in 1..=2 {
        let mut cfg = QuantizerConfig::new(1024, bits);
        cfg.rotation = RotationKind::Hadamard;
        let q = Quantizer::new(&cfg).unwrap();
        let t = Instant::now();
        let g = codec.prepare(&q).unwrap();
        println!("prepare b={bits}: {:?}", t.elapsed());
        let x = vec![0.5f32; 40 * 1024];
        let t = Instant::now();
        let e = g.encode(&x).unwrap();
        println!("encode: {:?}", t.elapsed());
        let t = Instant::now();
        g.decode(&e).unwrap();
        println!("decode: {:?}", t.elapsed());
    }
}
