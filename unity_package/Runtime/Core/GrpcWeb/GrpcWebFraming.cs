using System;
using System.Collections.Generic;

namespace NpcServer.Dialogue.GrpcWeb
{
    /// <summary>One gRPC-Web frame: a message, or the trailer block that ends the stream.</summary>
    public struct GrpcWebFrame
    {
        /// <summary>True for the trailer frame (flag 0x80), whose payload is HTTP/1 header text.</summary>
        public bool IsTrailer;

        /// <summary>The frame's payload: protobuf bytes for a message, header text for a trailer.</summary>
        public byte[] Payload;
    }

    /// <summary>
    /// The gRPC-Web binary frame format: 1 flag byte, a 4-byte big-endian length, then the payload.
    /// See grpc's doc/PROTOCOL-WEB.md.
    /// </summary>
    public static class GrpcWebFraming
    {
        /// <summary>Flag bit of a trailer frame.</summary>
        public const byte TrailerFlag = 0x80;

        /// <summary>Flag bit of a compressed message (never requested by this client).</summary>
        public const byte CompressedFlag = 0x01;

        /// <summary>Bytes before each payload.</summary>
        public const int HeaderLength = 5;

        /// <summary>Frames one uncompressed message.</summary>
        public static byte[] EncodeMessage(byte[] message)
        {
            return Encode(0, message);
        }

        /// <summary>Frames a payload with the given flag byte.</summary>
        public static byte[] Encode(byte flag, byte[] payload)
        {
            payload = payload ?? new byte[0];
            var frame = new byte[HeaderLength + payload.Length];
            frame[0] = flag;
            frame[1] = (byte)(payload.Length >> 24);
            frame[2] = (byte)(payload.Length >> 16);
            frame[3] = (byte)(payload.Length >> 8);
            frame[4] = (byte)payload.Length;
            Buffer.BlockCopy(payload, 0, frame, HeaderLength, payload.Length);
            return frame;
        }
    }

    /// <summary>Thrown when a response body is not a valid gRPC-Web frame stream.</summary>
    public sealed class GrpcWebProtocolException : Exception
    {
        /// <summary>Creates the exception with a message saying what was wrong.</summary>
        public GrpcWebProtocolException(string message) : base(message)
        {
        }
    }

    /// <summary>
    /// Splits a gRPC-Web body into frames as its bytes arrive, however the network chunks them: a frame may span
    /// many chunks and a chunk may hold many frames. Not thread-safe; one decoder per response.
    /// </summary>
    public sealed class GrpcWebDecoder
    {
        /// <summary>Largest frame accepted (guards against a corrupt length field allocating gigabytes).</summary>
        public const int DefaultMaxFrameLength = 16 * 1024 * 1024;

        readonly int _maxFrameLength;
        byte[] _buffer = new byte[1024];
        int _count;
        bool _sawTrailer;

        /// <summary>Creates a decoder that rejects frames longer than <paramref name="maxFrameLength"/>.</summary>
        public GrpcWebDecoder(int maxFrameLength = DefaultMaxFrameLength)
        {
            _maxFrameLength = maxFrameLength;
        }

        /// <summary>Bytes received that do not yet form a whole frame.</summary>
        public int PendingBytes
        {
            get { return _count; }
        }

        /// <summary>True once the trailer frame has been decoded.</summary>
        public bool SawTrailer
        {
            get { return _sawTrailer; }
        }

        /// <summary>Feeds a chunk and returns every frame it completed (possibly none).</summary>
        public List<GrpcWebFrame> Feed(byte[] chunk, int offset, int count)
        {
            var frames = new List<GrpcWebFrame>();
            Append(chunk, offset, count);
            int start = 0;
            while (_count - start >= GrpcWebFraming.HeaderLength)
            {
                byte flag = _buffer[start];
                int length = (_buffer[start + 1] << 24) | (_buffer[start + 2] << 16) | (_buffer[start + 3] << 8)
                             | _buffer[start + 4];
                if (length < 0 || length > _maxFrameLength)
                {
                    throw new GrpcWebProtocolException("gRPC-Web frame of " + (uint)length + " bytes exceeds the "
                                                       + _maxFrameLength + "-byte limit");
                }
                if (_count - start < GrpcWebFraming.HeaderLength + length) break;
                if (_sawTrailer)
                {
                    throw new GrpcWebProtocolException("data after the gRPC-Web trailer frame");
                }
                bool isTrailer = (flag & GrpcWebFraming.TrailerFlag) != 0;
                if (!isTrailer && (flag & GrpcWebFraming.CompressedFlag) != 0)
                {
                    throw new GrpcWebProtocolException("compressed gRPC-Web frame, but this client asks for none");
                }
                var payload = new byte[length];
                Buffer.BlockCopy(_buffer, start + GrpcWebFraming.HeaderLength, payload, 0, length);
                frames.Add(new GrpcWebFrame { IsTrailer = isTrailer, Payload = payload });
                _sawTrailer |= isTrailer;
                start += GrpcWebFraming.HeaderLength + length;
            }
            if (start > 0)
            {
                Buffer.BlockCopy(_buffer, start, _buffer, 0, _count - start);
                _count -= start;
            }
            return frames;
        }

        /// <summary>Feeds a whole array (see the other overload).</summary>
        public List<GrpcWebFrame> Feed(byte[] chunk)
        {
            return Feed(chunk, 0, chunk.Length);
        }

        void Append(byte[] chunk, int offset, int count)
        {
            if (count <= 0) return;
            if (_count + count > _buffer.Length)
            {
                int size = _buffer.Length;
                while (size < _count + count) size *= 2;
                Array.Resize(ref _buffer, size);
            }
            Buffer.BlockCopy(chunk, offset, _buffer, _count, count);
            _count += count;
        }
    }
}
