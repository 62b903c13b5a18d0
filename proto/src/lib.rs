//! Generated types and services of `proto/portunus.proto`, and the codec they use. Nothing
//! else lives here: the control adapter converts these to core types at its seam.
//!
//! Invariant: the .proto changes additively only (new fields, new messages, new oneof arms);
//! field numbers are never reused.
#![allow(missing_docs, clippy::all)]

/// `portunus.control.v1`.
pub mod v1 {
    tonic::include_proto!("portunus.control.v1");
}

/// The protobuf codec of every control-stream call: prost's, with small starting buffers.
///
/// A stream keeps one encode and one decode buffer for its whole life, and a server holds a
/// stream per connected client. tonic's default starts each at 8 KiB; the stream's messages
/// are mostly tens of bytes (a rule's outcome, a changed counter), so these start at 1 KiB
/// and grow only for the rare large message (a plan with many rules).
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    /// Where each stream's encode and decode buffers start.
    pub const START_BUFFER_BYTES: usize = 1024;
    /// Encoded bytes gathered before the encoder hands them to the transport (tonic's default).
    const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

    /// See the module documentation.
    #[derive(Debug, Clone, Copy)]
    pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for LeanCodec<T, U> {
        fn default() -> Self {
            LeanCodec(PhantomData)
        }
    }

    fn settings() -> BufferSettings {
        BufferSettings::new(START_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }

    impl<T, U> Codec for LeanCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(settings())
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstCodec::<T, U>::raw_decoder(settings())
        }
    }
}
