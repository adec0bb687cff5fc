using System;
using System.Collections.Generic;
using System.Threading;
using NpcServer.Api.V1;
using NpcServer.Dialogue.GrpcWeb;
using NUnit.Framework;

namespace NpcServer.Dialogue.Tests
{
    [TestFixture]
    public class NpcConversationTests
    {
        static TalkResponse Delta(string text)
        {
            return new TalkResponse { Delta = new ContentDelta { Content = text } };
        }

        static TalkResponse Final(string text)
        {
            return new TalkResponse { Final = new CompletionFinal { Message = new ChatMessage { Content = text } } };
        }

        [Test]
        public void SayRaisesDeltasThenFinishedAndSendsSettings()
        {
            var transport = new ScriptedTransport().Message(Delta("Aye")).Message(Delta("!")).Message(Final("Aye!"))
                .Trailer(0);
            var conversation = new NpcConversation(new NpcClient(transport), "tavern_keeper", "slot1")
            {
                PlayerName = "Ann", Preset = "dialogue", MaxTokens = 32,
            };
            var events = new List<string>();
            conversation.DeltaReceived += d => events.Add("delta:" + d + " partial:" + conversation.PartialText);
            conversation.LineFinished += l => events.Add("line:" + l.Text);
            var line = Sync.Run(conversation.SayAsync("Ale?"));
            Assert.AreEqual(new[] { "delta:Aye partial:Aye", "delta:! partial:Aye!", "line:Aye!" }, events.ToArray());
            Assert.AreSame(line, conversation.LastLine);
            Assert.IsFalse(conversation.IsTalking);
            Assert.AreEqual("", conversation.PartialText);
            var sent = TalkRequest.ParseFrom(new GrpcWebDecoder().Feed(transport.LastRequest.Body)[0].Payload);
            Assert.AreEqual("Ann", sent.PlayerName);
            Assert.AreEqual("dialogue", sent.Preset);
            Assert.AreEqual(32, sent.MaxTokens.Value);
            Assert.AreEqual("slot1", sent.ConversationId);
        }

        [Test]
        public void LineStartedOnlyForAcceptedLinesAndBeforeTheirDeltas()
        {
            var transport = new ScriptedTransport { HoldOpenAfterChunks = true }.Message(Delta("Hm"));
            var conversation = new NpcConversation(new NpcClient(transport), "tavern_keeper", "slot1");
            var events = new List<string>();
            conversation.LineStarted += () => events.Add("started");
            conversation.DeltaReceived += d => events.Add("delta:" + d);
            Assert.IsInstanceOf<ArgumentException>(Sync.Catch(() => conversation.SayAsync(" ")));
            Assert.AreEqual(0, events.Count, "an empty line is refused before it starts");
            var first = conversation.SayAsync("One");
            Assert.IsInstanceOf<InvalidOperationException>(Sync.Catch(() => conversation.SayAsync("Two")));
            Assert.AreEqual(new[] { "started", "delta:Hm" }, events.ToArray());
            conversation.Cancel();
            Assert.IsInstanceOf<OperationCanceledException>(Sync.Catch(() => first));
        }

        [Test]
        public void OneLineAtATime()
        {
            var transport = new ScriptedTransport { HoldOpenAfterChunks = true }.Message(Delta("Hm"));
            var conversation = new NpcConversation(new NpcClient(transport), "tavern_keeper", "slot1");
            var first = conversation.SayAsync("One");
            Assert.IsTrue(conversation.IsTalking);
            Assert.AreEqual("Hm", conversation.PartialText);
            var busy = Sync.Catch(() => conversation.SayAsync("Two"));
            Assert.IsInstanceOf<InvalidOperationException>(busy);
            StringAssert.Contains("Cancel()", busy.Message);
            Assert.AreEqual(1, transport.Calls);

            Exception failure = null;
            conversation.LineFailed += e => failure = e;
            conversation.Cancel();
            Assert.IsInstanceOf<OperationCanceledException>(Sync.Catch(() => first));
            Assert.IsInstanceOf<OperationCanceledException>(failure);
            Assert.IsFalse(conversation.IsTalking);
        }

        [Test]
        public void EmptyLineIsRejectedBeforeSending()
        {
            var transport = new ScriptedTransport();
            var conversation = new NpcConversation(new NpcClient(transport), "tavern_keeper", "slot1");
            Assert.IsInstanceOf<ArgumentException>(Sync.Catch(() => conversation.SayAsync("   ")));
            Assert.AreEqual(0, transport.Calls);
        }

        [Test]
        public void FailureIsReportedAndStateResets()
        {
            var transport = new ScriptedTransport().Trailer(14, "model not loaded");
            var conversation = new NpcConversation(new NpcClient(transport), "tavern_keeper", "slot1");
            Exception failure = null;
            conversation.LineFailed += e => failure = e;
            Assert.IsInstanceOf<NpcUnavailableException>(Sync.Catch(() => conversation.SayAsync("Hi")));
            Assert.AreSame(failure, failure as NpcUnavailableException);
            Assert.IsFalse(conversation.IsTalking);
        }

        [Test]
        public void ImportRetargetsSavedTurnsToThisConversation()
        {
            var saved = new Conversation { PersonaId = "tavern_keeper", ConversationId = "old-slot" };
            saved.Turns.Add(new Turn { PlayerLine = "Hi", NpcLine = "Hm." });
            var transport = new ScriptedTransport().Message(new ImportConversationResponse { ImportedTurns = 1 }).Trailer(0);
            var conversation = new NpcConversation(new NpcClient(transport), "tavern_keeper", "new-slot");
            Assert.AreEqual(1, Sync.Run(conversation.ImportAsync(ConversationSave.ToSaveString(saved))));
            var sent = ImportConversationRequest.ParseFrom(new GrpcWebDecoder().Feed(transport.LastRequest.Body)[0].Payload);
            Assert.AreEqual("new-slot", sent.Conversation.ConversationId);
            Assert.AreEqual("Hm.", sent.Conversation.Turns[0].NpcLine);
        }
    }

    [TestFixture]
    public class ConversationSaveTests
    {
        [Test]
        public void SaveStringRoundTrips()
        {
            var conversation = new Conversation { PersonaId = "ship_ai", ConversationId = "p1" };
            conversation.Turns.Add(new Turn { PlayerLine = "Status?", NpcLine = "Nominal. \u2713", CreateTimeMs = 42 });
            string saved = ConversationSave.ToSaveString(conversation);
            var restored = ConversationSave.FromSaveString(saved);
            Assert.AreEqual("Nominal. \u2713", restored.Turns[0].NpcLine);
            Assert.AreEqual(42L, restored.Turns[0].CreateTimeMs);
            Assert.AreEqual(saved, ConversationSave.ToSaveString(restored));
        }

        [Test]
        public void BadSaveStringsSayWhat()
        {
            Assert.Throws<FormatException>(() => ConversationSave.FromSaveString(""));
            StringAssert.Contains("not base64", Assert.Throws<FormatException>(
                () => ConversationSave.FromSaveString("not base64!")).Message);
            StringAssert.Contains("corrupt", Assert.Throws<FormatException>(
                () => ConversationSave.FromSaveString(Convert.ToBase64String(new byte[] { 0x0a, 0x05, 0x61 }))).Message);
        }
    }
}
