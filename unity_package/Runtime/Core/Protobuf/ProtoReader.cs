using System;
using System.Text;

namespace NpcServer.Dialogue.Protobuf
{
    /// <summary>Thrown when bytes are not a valid protobuf encoding of the expected message.</summary>
    public sealed class ProtoDecodeException : Exception
    {
        /// <summary>Creates the exception with a message saying what was wrong.</summary>
        public ProtoDecodeException(string message) : base(message)
        {
        }
    }

    /// <summary>Reads the protobuf binary wire format from a byte range.</summary>
    public sealed class ProtoReader
    {
        static readonly UTF8Encoding Utf8 = new UTF8Encoding(false, true);
        readonly byte[] _buffer;
        readonly int _limit;
        int _position;

        /// <summary>Reads the whole array.</summary>
        public ProtoReader(byte[] buffer) : this(buffer, 0, buffer == null ? 0 : buffer.Length)
        {
        }

        /// <summary>Reads <paramref name="count"/> bytes starting at <paramref name="offset"/>.</summary>
        public ProtoReader(byte[] buffer, int offset, int count)
        {
            if (buffer == null) throw new ArgumentNullException("buffer");
            if (offset < 0 || count < 0 || offset + count > buffer.Length)
            {
                throw new ArgumentOutOfRangeException("count", "range lies outside the buffer");
            }
            _buffer = buffer;
            _position = offset;
            _limit = offset + count;
        }

        /// <summary>Parses a whole message of type T from bytes.</summary>
        public static T Parse<T>(byte[] data) where T : IProtoMessage, new()
        {
            var message = new T();
            message.MergeFrom(new ProtoReader(data));
            return message;
        }

        /// <summary>True when every byte has been read.</summary>
        public bool IsAtEnd
        {
            get { return _position >= _limit; }
        }

        /// <summary>Reads the next tag; returns false at the end of the message.</summary>
        public bool ReadTag(out int fieldNumber, out WireType wireType)
        {
            if (IsAtEnd)
            {
                fieldNumber = 0;
                wireType = WireType.Varint;
                return false;
            }
            ulong tag = ReadRawVarint();
            fieldNumber = (int)(tag >> 3);
            wireType = (WireType)(int)(tag & 7);
            if (fieldNumber <= 0) throw new ProtoDecodeException("invalid field number 0 in tag");
            return true;
        }

        /// <summary>Reads an unsigned varint (up to 10 bytes).</summary>
        public ulong ReadRawVarint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 70; shift += 7)
            {
                if (_position >= _limit) throw new ProtoDecodeException("truncated varint");
                byte b = _buffer[_position++];
                result |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return result;
            }
            throw new ProtoDecodeException("varint longer than 10 bytes");
        }

        /// <summary>int32 (protobuf truncates a 64-bit varint to its low 32 bits).</summary>
        public int ReadInt32()
        {
            return (int)ReadRawVarint();
        }

        /// <summary>int64.</summary>
        public long ReadInt64()
        {
            return (long)ReadRawVarint();
        }

        /// <summary>uint32.</summary>
        public uint ReadUInt32()
        {
            return (uint)ReadRawVarint();
        }

        /// <summary>uint64.</summary>
        public ulong ReadUInt64()
        {
            return ReadRawVarint();
        }

        /// <summary>bool (any non-zero varint is true).</summary>
        public bool ReadBool()
        {
            return ReadRawVarint() != 0;
        }

        /// <summary>float from 4 little-endian bytes.</summary>
        public float ReadFloat()
        {
            Require(4);
            var bytes = new byte[4];
            Buffer.BlockCopy(_buffer, _position, bytes, 0, 4);
            _position += 4;
            if (!BitConverter.IsLittleEndian) Array.Reverse(bytes);
            return BitConverter.ToSingle(bytes, 0);
        }

        /// <summary>double from 8 little-endian bytes.</summary>
        public double ReadDouble()
        {
            Require(8);
            ulong bits = 0;
            for (int i = 0; i < 8; i++)
            {
                bits |= (ulong)_buffer[_position + i] << (8 * i);
            }
            _position += 8;
            return BitConverter.Int64BitsToDouble((long)bits);
        }

        /// <summary>A length-prefixed UTF-8 string.</summary>
        public string ReadString()
        {
            int length = ReadLength();
            try
            {
                string value = Utf8.GetString(_buffer, _position, length);
                _position += length;
                return value;
            }
            catch (ArgumentException)
            {
                throw new ProtoDecodeException("string field is not valid UTF-8");
            }
        }

        /// <summary>Length-prefixed bytes.</summary>
        public byte[] ReadBytes()
        {
            int length = ReadLength();
            var value = new byte[length];
            Buffer.BlockCopy(_buffer, _position, value, 0, length);
            _position += length;
            return value;
        }

        /// <summary>Reads a length-prefixed embedded message, merging it into <paramref name="message"/>.</summary>
        public void ReadMessage(IProtoMessage message)
        {
            int length = ReadLength();
            var inner = new ProtoReader(_buffer, _position, length);
            _position += length;
            message.MergeFrom(inner);
        }

        /// <summary>
        /// Starts a packed repeated field: returns a reader over its bytes, which the caller drains with the
        /// scalar readers until <see cref="IsAtEnd"/>.
        /// </summary>
        public ProtoReader ReadPacked()
        {
            int length = ReadLength();
            var inner = new ProtoReader(_buffer, _position, length);
            _position += length;
            return inner;
        }

        /// <summary>Skips a field this codec does not know (fields added by a newer server).</summary>
        public void SkipField(WireType wireType)
        {
            switch (wireType)
            {
                case WireType.Varint:
                    ReadRawVarint();
                    break;
                case WireType.Fixed64:
                    Require(8);
                    _position += 8;
                    break;
                case WireType.LengthDelimited:
                    int length = ReadLength();
                    _position += length;
                    break;
                case WireType.Fixed32:
                    Require(4);
                    _position += 4;
                    break;
                default:
                    throw new ProtoDecodeException("unsupported wire type " + (int)wireType);
            }
        }

        int ReadLength()
        {
            ulong length = ReadRawVarint();
            if (length > (ulong)(_limit - _position)) throw new ProtoDecodeException("length runs past the message end");
            return (int)length;
        }

        void Require(int count)
        {
            if (_limit - _position < count) throw new ProtoDecodeException("truncated fixed-width field");
        }
    }
}
