using System;
using NpcServer.Api.V1;
using NpcServer.Dialogue.Protobuf;
using NUnit.Framework;

namespace NpcServer.Dialogue.Tests
{
    [TestFixture]
    public class ProtoCodecTests
    {
        static string Hex(byte[] bytes)
        {
            return BitConverter.ToString(bytes).Replace("-", "").ToLowerInvariant();
        }

        static byte[] FromHex(string hex)
        {
            var bytes = new byte[hex.Length / 2];
            for (int i = 0; i < bytes.Length; i++) bytes[i] = Convert.ToByte(hex.Substring(2 * i, 2), 16);
            return bytes;
        }

        // Expected bytes below were produced by Python protobuf (npcserver_pb2) for the same messages.
        [Test]
        public void StringFieldMatchesProtobufBytes()
        {
            Assert.AreEqual("0a026869", Hex(new ContentDelta { Content = "hi" }.ToByteArray()));
        }

        [Test]
        public void NegativeInt32IsTenByteVarint()
        {
            Assert.AreEqual("38ffffffffffffffffff01", Hex(new Model { GpuLayers = -1 }.ToByteArray()));
        }

        [Test]
        public void NegativeZeroDoubleIsWritten()
        {
            Assert.AreEqual("210000000000000080", Hex(new Timings { EvalMs = -0.0 }.ToByteArray()));
        }

        [Test]
        public void DefaultsAreNotWrittenButOptionalZeroIs()
        {
            Assert.AreEqual(0, new TalkRequest().ToByteArray().Length);
            var request = new TalkRequest { Temperature = 0f, MaxTokens = 0 };
            // field 5 fixed32 0.0, then field 7 varint 0
            Assert.AreEqual("2d000000003800", Hex(request.ToByteArray()));
            var parsed = TalkRequest.ParseFrom(request.ToByteArray());
            Assert.IsTrue(parsed.Temperature.HasValue);
            Assert.IsTrue(parsed.MaxTokens.HasValue);
            Assert.IsFalse(parsed.TopP.HasValue);
        }

        [Test]
        public void NestedMessagesAndOneofRoundTrip()
        {
            var response = new TalkResponse
            {
                Final = new CompletionFinal
                {
                    Message = new ChatMessage { Role = "assistant", Content = "Stew. Again. \u00e9\U0001F37A" },
                    FinishReason = FinishReason.Stop,
                    Usage = new Usage { PromptTokens = 300, CompletionTokens = 5, TotalTokens = 305 },
                },
            };
            var parsed = TalkResponse.ParseFrom(response.ToByteArray());
            Assert.AreEqual(TalkResponse.EventOneofCase.Final, parsed.EventCase);
            Assert.IsNull(parsed.Delta);
            Assert.AreEqual("Stew. Again. \u00e9\U0001F37A", parsed.Final.Message.Content);
            Assert.AreEqual(300, parsed.Final.Usage.PromptTokens);
            Assert.AreEqual(FinishReason.Stop, parsed.Final.FinishReason);
            Assert.AreEqual(Hex(response.ToByteArray()), Hex(parsed.ToByteArray()));
        }

        [Test]
        public void SettingOneOneofMemberClearsTheOther()
        {
            var response = new TalkResponse { Delta = new ContentDelta { Content = "a" } };
            response.Final = new CompletionFinal();
            Assert.IsNull(response.Delta);
            Assert.AreEqual(TalkResponse.EventOneofCase.Final, response.EventCase);
            response.ClearEvent();
            Assert.AreEqual(TalkResponse.EventOneofCase.None, response.EventCase);
        }

        [Test]
        public void RepeatedFieldsKeepOrder()
        {
            var conversation = new Conversation { PersonaId = "tavern_keeper", ConversationId = "p1" };
            for (int i = 0; i < 3; i++)
            {
                conversation.Turns.Add(new Turn { PlayerLine = "q" + i, NpcLine = "a" + i, CreateTimeMs = 1700000000000L + i });
            }
            var parsed = Conversation.ParseFrom(conversation.ToByteArray());
            Assert.AreEqual(3, parsed.Turns.Count);
            Assert.AreEqual("a2", parsed.Turns[2].NpcLine);
            Assert.AreEqual(1700000000001L, parsed.Turns[1].CreateTimeMs);
        }

        [Test]
        public void UnknownFieldsAreSkipped()
        {
            // field 1 "hi", then unknown fields 99 (varint), 100 (fixed64), 101 (bytes), 102 (fixed32)
            var bytes = FromHex("0a026869" + "98069601" + "a106" + "0102030405060708" + "aa0603616263" + "b50601020304");
            Assert.AreEqual("hi", ContentDelta.ParseFrom(bytes).Content);
        }

        [Test]
        public void WrongWireTypeForKnownFieldIsSkipped()
        {
            // field 1 sent as a varint: not a valid string, so it is skipped like an unknown field
            Assert.AreEqual("", ContentDelta.ParseFrom(FromHex("0805")).Content);
        }

        [Test]
        public void TruncatedInputThrows()
        {
            Assert.Throws<ProtoDecodeException>(() => ContentDelta.ParseFrom(FromHex("0a0568")));
            Assert.Throws<ProtoDecodeException>(() => Timings.ParseFrom(FromHex("2100")));
            Assert.Throws<ProtoDecodeException>(() => Usage.ParseFrom(FromHex("08ff")));
        }

        [Test]
        public void InvalidUtf8Throws()
        {
            Assert.Throws<ProtoDecodeException>(() => ContentDelta.ParseFrom(FromHex("0a02c328")));
        }

        [Test]
        public void SingularMessageFieldsMergeWhenRepeatedOnTheWire()
        {
            var first = new CompletionFinal { Usage = new Usage { PromptTokens = 1 } }.ToByteArray();
            var second = new CompletionFinal { Usage = new Usage { CompletionTokens = 2 } }.ToByteArray();
            var both = new byte[first.Length + second.Length];
            Buffer.BlockCopy(first, 0, both, 0, first.Length);
            Buffer.BlockCopy(second, 0, both, first.Length, second.Length);
            var parsed = CompletionFinal.ParseFrom(both);
            Assert.AreEqual(1, parsed.Usage.PromptTokens);
            Assert.AreEqual(2, parsed.Usage.CompletionTokens);
        }

        [Test]
        public void RpcPathsAreGenerated()
        {
            Assert.AreEqual("/npcserver.api.v1.ConversationService/Talk", ConversationServicePaths.Talk);
            Assert.AreEqual("/npcserver.api.v1.ModelService/ListModels", ModelServicePaths.ListModels);
        }
    }
}
