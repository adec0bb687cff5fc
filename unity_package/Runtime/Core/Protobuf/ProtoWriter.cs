using System;
using System.IO;
using System.Text;

namespace NpcServer.Dialogue.Protobuf
{
    /// <summary>Protobuf wire types (the low 3 bits of a tag).</summary>
    public enum WireType
    {
        /// <summary>int32, int64, uint32, uint64, bool, enum.</summary>
        Varint = 0,
        /// <summary>double, fixed64.</summary>
        Fixed64 = 1,
        /// <summary>string, bytes, embedded messages, packed repeated fields.</summary>
        LengthDelimited = 2,
        /// <summary>Deprecated groups (start).</summary>
        StartGroup = 3,
        /// <summary>Deprecated groups (end).</summary>
        EndGroup = 4,
        /// <summary>float, fixed32.</summary>
        Fixed32 = 5,
    }

    /// <summary>A protobuf message that the generated codec can write and read.</summary>
    public interface IProtoMessage
    {
        /// <summary>Writes every set field, in field-number order (the order protobuf's own encoders use).</summary>
        void WriteTo(ProtoWriter writer);

        /// <summary>Reads fields until the reader is exhausted, merging them into this message.</summary>
        void MergeFrom(ProtoReader reader);
    }

    /// <summary>
    /// Writes the protobuf binary wire format. Small and allocation-light rather than fast: NPC messages are a few
    /// hundred bytes, so embedded messages are written to a scratch writer and copied with their length.
    /// </summary>
    public sealed class ProtoWriter
    {
        static readonly UTF8Encoding Utf8 = new UTF8Encoding(false, true);
        readonly MemoryStream _stream = new MemoryStream();

        /// <summary>Bytes written so far.</summary>
        public int Length
        {
            get { return (int)_stream.Length; }
        }

        /// <summary>Returns a copy of the bytes written so far.</summary>
        public byte[] ToArray()
        {
            return _stream.ToArray();
        }

        /// <summary>Serializes one message to bytes.</summary>
        public static byte[] Serialize(IProtoMessage message)
        {
            if (message == null) throw new ArgumentNullException("message");
            var writer = new ProtoWriter();
            message.WriteTo(writer);
            return writer.ToArray();
        }

        /// <summary>Writes a field tag.</summary>
        public void WriteTag(int fieldNumber, WireType wireType)
        {
            WriteRawVarint((ulong)(((uint)fieldNumber << 3) | (uint)wireType));
        }

        /// <summary>Writes an unsigned varint.</summary>
        public void WriteRawVarint(ulong value)
        {
            while (value >= 0x80)
            {
                _stream.WriteByte((byte)(value | 0x80));
                value >>= 7;
            }
            _stream.WriteByte((byte)value);
        }

        /// <summary>Writes raw bytes.</summary>
        public void WriteRawBytes(byte[] bytes, int offset, int count)
        {
            _stream.Write(bytes, offset, count);
        }

        /// <summary>int32: negative values are sign-extended to 10 bytes, as the protobuf spec requires.</summary>
        public void WriteInt32(int value)
        {
            WriteRawVarint((ulong)(long)value);
        }

        /// <summary>int64 as a varint.</summary>
        public void WriteInt64(long value)
        {
            WriteRawVarint((ulong)value);
        }

        /// <summary>uint32 as a varint.</summary>
        public void WriteUInt32(uint value)
        {
            WriteRawVarint(value);
        }

        /// <summary>uint64 as a varint.</summary>
        public void WriteUInt64(ulong value)
        {
            WriteRawVarint(value);
        }

        /// <summary>bool as a one-byte varint.</summary>
        public void WriteBool(bool value)
        {
            _stream.WriteByte(value ? (byte)1 : (byte)0);
        }

        /// <summary>float as 4 little-endian bytes.</summary>
        public void WriteFloat(float value)
        {
            var bytes = BitConverter.GetBytes(value);
            if (!BitConverter.IsLittleEndian) Array.Reverse(bytes);
            _stream.Write(bytes, 0, 4);
        }

        /// <summary>double as 8 little-endian bytes.</summary>
        public void WriteDouble(double value)
        {
            ulong bits = (ulong)BitConverter.DoubleToInt64Bits(value);
            for (int i = 0; i < 8; i++)
            {
                _stream.WriteByte((byte)(bits >> (8 * i)));
            }
        }

        /// <summary>A length-prefixed UTF-8 string.</summary>
        public void WriteString(string value)
        {
            var bytes = Utf8.GetBytes(value ?? "");
            WriteRawVarint((ulong)bytes.Length);
            _stream.Write(bytes, 0, bytes.Length);
        }

        /// <summary>Length-prefixed bytes.</summary>
        public void WriteBytes(byte[] value)
        {
            value = value ?? new byte[0];
            WriteRawVarint((ulong)value.Length);
            _stream.Write(value, 0, value.Length);
        }

        /// <summary>A length-prefixed embedded message.</summary>
        public void WriteMessage(IProtoMessage message)
        {
            var inner = new ProtoWriter();
            message.WriteTo(inner);
            WriteRawVarint((ulong)inner._stream.Length);
            inner._stream.WriteTo(_stream);
        }

        /// <summary>
        /// True when a proto3 float field without presence must be written. Any non-zero bit pattern counts, so
        /// -0.0 is written, as protobuf's own encoders do.
        /// </summary>
        public static bool IsNonDefault(float value)
        {
            return BitConverter.ToInt32(BitConverter.GetBytes(value), 0) != 0;
        }

        /// <summary>True when a proto3 double field without presence must be written (see the float overload).</summary>
        public static bool IsNonDefault(double value)
        {
            return BitConverter.DoubleToInt64Bits(value) != 0;
        }
    }
}
