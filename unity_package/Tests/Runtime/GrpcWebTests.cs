using System.Collections.Generic;
using System.Linq;
using System.Text;
using NpcServer.Dialogue.GrpcWeb;
using NUnit.Framework;

namespace NpcServer.Dialogue.Tests
{
    [TestFixture]
    public class GrpcWebFramingTests
    {
        [Test]
        public void EncodeWritesFlagAndBigEndianLength()
        {
            var frame = GrpcWebFraming.EncodeMessage(new byte[300]);
            Assert.AreEqual(new byte[] { 0, 0, 0, 1, 44 }, frame.Take(5).ToArray());
            Assert.AreEqual(305, frame.Length);
        }

        [Test]
        public void FrameSplitAcrossChunksIsReassembled()
        {
            var decoder = new GrpcWebDecoder();
            var data = GrpcWebFraming.EncodeMessage(new byte[] { 1, 2, 3 });
            Assert.AreEqual(0, decoder.Feed(data, 0, 4).Count);
            Assert.AreEqual(4, decoder.PendingBytes);
            var frames = decoder.Feed(data, 4, data.Length - 4);
            Assert.AreEqual(1, frames.Count);
            Assert.IsFalse(frames[0].IsTrailer);
            Assert.AreEqual(new byte[] { 1, 2, 3 }, frames[0].Payload);
            Assert.AreEqual(0, decoder.PendingBytes);
        }

        [Test]
        public void ManyFramesInOneChunk()
        {
            var chunk = new List<byte>();
            for (int i = 0; i < 50; i++) chunk.AddRange(GrpcWebFraming.EncodeMessage(new[] { (byte)i }));
            chunk.AddRange(GrpcWebFraming.Encode(GrpcWebFraming.TrailerFlag, Encoding.ASCII.GetBytes("grpc-status: 0\r\n")));
            var frames = new GrpcWebDecoder().Feed(chunk.ToArray());
            Assert.AreEqual(51, frames.Count);
            Assert.AreEqual(49, frames[49].Payload[0]);
            Assert.IsTrue(frames[50].IsTrailer);
        }

        [Test]
        public void EmptyMessageFrameIsAFrame()
        {
            var frames = new GrpcWebDecoder().Feed(GrpcWebFraming.EncodeMessage(new byte[0]));
            Assert.AreEqual(1, frames.Count);
            Assert.AreEqual(0, frames[0].Payload.Length);
        }

        [Test]
        public void OversizedFrameIsRejected()
        {
            var decoder = new GrpcWebDecoder(1024);
            Assert.Throws<GrpcWebProtocolException>(() => decoder.Feed(new byte[] { 0, 0, 0, 4, 1 }));
        }

        [Test]
        public void CompressedFrameIsRejected()
        {
            Assert.Throws<GrpcWebProtocolException>(() => new GrpcWebDecoder().Feed(new byte[] { 1, 0, 0, 0, 0 }));
        }

        [Test]
        public void DataAfterTrailerIsRejected()
        {
            var decoder = new GrpcWebDecoder();
            decoder.Feed(GrpcWebFraming.Encode(GrpcWebFraming.TrailerFlag, new byte[0]));
            Assert.IsTrue(decoder.SawTrailer);
            Assert.Throws<GrpcWebProtocolException>(() => decoder.Feed(GrpcWebFraming.EncodeMessage(new byte[1])));
        }
    }

    [TestFixture]
    public class GrpcWebTrailersTests
    {
        [Test]
        public void ParsesHeaderBlockCaseInsensitively()
        {
            var trailers = GrpcWebTrailers.Parse(Encoding.ASCII.GetBytes(
                "Grpc-Status: 5\r\ngrpc-message: persona 'nobody' not found\r\nx-extra:  a \r\n"));
            Assert.AreEqual("5", trailers["grpc-status"]);
            Assert.AreEqual("a", trailers["x-extra"]);
            GrpcStatusCode status;
            string message;
            Assert.IsTrue(GrpcWebTrailers.TryGetStatus(trailers, out status, out message));
            Assert.AreEqual(GrpcStatusCode.NotFound, status);
            Assert.AreEqual("persona 'nobody' not found", message);
        }

        [Test]
        public void PercentEncodedMessageIsDecoded()
        {
            Assert.AreEqual("caf\u00e9 100% \U0001F37A", GrpcWebTrailers.PercentDecode("caf%C3%A9 100%25 %F0%9F%8D%BA"));
            Assert.AreEqual("50% off", GrpcWebTrailers.PercentDecode("50% off"));
        }

        [Test]
        public void MissingStatusIsReported()
        {
            GrpcStatusCode status;
            string message;
            Assert.IsFalse(GrpcWebTrailers.TryGetStatus(new Dictionary<string, string>(), out status, out message));
        }

        [Test]
        public void MalformedLineThrows()
        {
            Assert.Throws<GrpcWebProtocolException>(() => GrpcWebTrailers.Parse(Encoding.ASCII.GetBytes("nocolon\r\n")));
        }

        [Test]
        public void HttpStatusMapsLikeGrpc()
        {
            Assert.AreEqual(GrpcStatusCode.Unimplemented, GrpcWebTrailers.FromHttpStatus(404));
            Assert.AreEqual(GrpcStatusCode.Unavailable, GrpcWebTrailers.FromHttpStatus(503));
            Assert.AreEqual(GrpcStatusCode.Unauthenticated, GrpcWebTrailers.FromHttpStatus(401));
            Assert.AreEqual(GrpcStatusCode.Unknown, GrpcWebTrailers.FromHttpStatus(418));
        }

        [Test]
        public void ExceptionsAreTyped()
        {
            Assert.IsInstanceOf<NpcNotFoundException>(NpcRpcException.FromStatus(GrpcStatusCode.NotFound, "x", null));
            Assert.IsInstanceOf<NpcBusyException>(NpcRpcException.FromStatus(GrpcStatusCode.ResourceExhausted, "", null));
            var other = NpcRpcException.FromStatus(GrpcStatusCode.Internal, "boom", null);
            Assert.AreEqual(typeof(NpcRpcException), other.GetType());
            Assert.AreEqual("Internal: boom", other.Message);
        }
    }
}
