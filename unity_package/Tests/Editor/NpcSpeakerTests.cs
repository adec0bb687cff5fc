using System;
using System.Collections.Generic;
using NpcServer.Api.V1;
using NpcServer.Dialogue.Tests;
using NpcServer.Dialogue.Unity;
using NUnit.Framework;
using UnityEngine;

namespace NpcServer.Dialogue.EditorTests
{
    // Edit-mode tests of the Unity glue. In Unity they run in the Test Runner; outside Unity, tests/unity/run.sh
    // runs them against the UnityEngine stub, which checks the glue's own logic (event order, main-thread
    // dispatch, error reporting), not Unity's.
    [TestFixture]
    public class NpcSpeakerTests
    {
        GameObject _npc;

        [SetUp]
        public void CreateNpc()
        {
            _npc = new GameObject("Greta");
        }

        [TearDown]
        public void DestroyNpc()
        {
            UnityEngine.Object.DestroyImmediate(_npc);
        }

        static TalkResponse Delta(string text)
        {
            return new TalkResponse { Delta = new ContentDelta { Content = text } };
        }

        static TalkResponse Final(string text, bool structured)
        {
            return new TalkResponse
            {
                Final = new CompletionFinal
                {
                    Message = new ChatMessage { Role = "assistant", Content = text },
                    Structured = structured ? new StructuredOutput { Valid = true } : null,
                },
            };
        }

        NpcSpeaker Speaker(ScriptedTransport transport, List<string> log)
        {
            var speaker = _npc.AddComponent<NpcSpeaker>();
            speaker.UseClient(new NpcClient(transport));
            speaker.onLineStarted.AddListener(() => log.Add("started"));
            speaker.onDelta.AddListener(d => log.Add("delta:" + d));
            speaker.onLineFinished.AddListener((text, json) => log.Add("finished:" + text + "|" + json));
            speaker.onError.AddListener(message => log.Add("error:" + message));
            return speaker;
        }

        [Test]
        public void EventsWaitForTheMainThreadThenFireInOrder()
        {
            var log = new List<string>();
            var transport = new ScriptedTransport().Message(Delta("Stew")).Message(Delta(".")).Message(Final("Stew.", false))
                .Trailer(0);
            var speaker = Speaker(transport, log);
            NpcLine fromEvent = null;
            speaker.LineFinished += line => fromEvent = line;
            speaker.Say("Menu?");
            Assert.AreEqual(0, log.Count, "nothing may fire outside the main-thread dispatch");
            Assert.AreEqual(4, speaker.DispatchPendingEvents());
            Assert.AreEqual(new[] { "started", "delta:Stew", "delta:.", "finished:Stew.|" }, log.ToArray());
            Assert.AreEqual("Stew.", fromEvent.Text);
            Assert.AreSame(fromEvent, speaker.LastLine);
        }

        [Test]
        public void StructuredPayloadGoesToTheFinishedEvent()
        {
            var log = new List<string>();
            const string json = "{\"line\":\"Aye\",\"emotion\":\"calm\",\"action\":\"none\"}";
            var speaker = Speaker(new ScriptedTransport().Message(Final(json, true)).Trailer(0), log);
            speaker.PersonaId = "ship_ai";
            speaker.Say("Status?");
            speaker.DispatchPendingEvents();
            Assert.AreEqual("finished:" + json + "|" + json, log[1]);
        }

        [Test]
        public void ServerErrorsReachOnErrorAndFailed()
        {
            var log = new List<string>();
            var speaker = Speaker(new ScriptedTransport().Trailer(5, "persona 'nobody' not found"), log);
            Exception failure = null;
            speaker.Failed += e => failure = e;
            speaker.PersonaId = "nobody";
            speaker.Say("Hi");
            speaker.DispatchPendingEvents();
            Assert.AreEqual("error:NotFound: persona 'nobody' not found", log[1]);
            Assert.IsInstanceOf<NpcNotFoundException>(failure);
            Assert.IsFalse(speaker.IsTalking);
        }

        [Test]
        public void MissingSettingsSayHowToFixIt()
        {
            var speaker = _npc.AddComponent<NpcSpeaker>();
            var errors = new List<string>();
            speaker.onError.AddListener(errors.Add);
            speaker.Say("Hi");
            speaker.DispatchPendingEvents();
            StringAssert.Contains("Assets > Create > NPC Dialogue > Connection Settings", errors[0]);
        }

        [Test]
        public void BusySpeakerReportsInsteadOfInterrupting()
        {
            var log = new List<string>();
            var transport = new ScriptedTransport { HoldOpenAfterChunks = true }.Message(Delta("Hm"));
            var speaker = Speaker(transport, log);
            speaker.Say("One");
            speaker.Say("Two");
            speaker.DispatchPendingEvents();
            Assert.IsTrue(speaker.IsTalking);
            Assert.AreEqual("Hm", speaker.PartialText);
            StringAssert.StartsWith("error:NPC 'tavern_keeper' is still speaking", log[log.Count - 1]);
            speaker.Cancel();
            speaker.DispatchPendingEvents();
            Assert.IsFalse(speaker.IsTalking);
            Assert.IsFalse(log.Exists(entry => entry.StartsWith("error:") && entry.Contains("cancel")),
                "a cancel is not an error");
            Assert.AreEqual(1, transport.Calls);
        }

        [Test]
        public void ARefusedLineNeitherStartsNorClearsTheReplyStillStreaming()
        {
            var log = new List<string>();
            var transport = new ScriptedTransport { HoldOpenAfterChunks = true }.Message(Delta("Hm, "));
            var speaker = Speaker(transport, log);
            var narrator = _npc.AddComponent<NpcNarrator>();
            narrator.Speaker = speaker;
            speaker.Say("One");
            speaker.DispatchPendingEvents();
            speaker.Say("Two");
            speaker.Say("   ");
            speaker.DispatchPendingEvents();
            narrator.RevealAll();
            Assert.AreEqual("Hm, ", narrator.VisibleText, "a refused line must not wipe the reply being typed");
            Assert.AreEqual(1, log.FindAll(entry => entry == "started").Count);
            StringAssert.StartsWith("error:NPC 'tavern_keeper' is still speaking", log[log.Count - 2]);
            StringAssert.Contains("must not be empty", log[log.Count - 1]);
            speaker.Cancel();
            speaker.DispatchPendingEvents();
        }

        [Test]
        public void AnEmptyLineRaisesOnlyTheError()
        {
            var log = new List<string>();
            var transport = new ScriptedTransport().Message(Final("Hm.", false)).Trailer(0);
            var speaker = Speaker(transport, log);
            bool started = false;
            speaker.LineStarted += () => started = true;
            speaker.Say("");
            speaker.DispatchPendingEvents();
            Assert.IsFalse(started);
            Assert.AreEqual(1, log.Count);
            StringAssert.Contains("must not be empty", log[0]);
            Assert.AreEqual(0, transport.Calls);
        }

        [Serializable]
        public class ShipLine
        {
            public string line;
        }

        [Test]
        public void GetStructuredReturnsDefaultForAPayloadThatIsNotAnObject()
        {
            var array = new NpcLine(Final("[\"aye\", \"nay\"]", true).Final);
            Assert.IsTrue(array.IsStructuredValid, "a schema may allow a top-level array");
            Assert.IsNull(array.GetStructured<ShipLine>());
            Assert.IsNull(new NpcLine(Final("Aye.", false).Final).GetStructured<ShipLine>());
        }

        [Test]
        public void SaveGameRoundTripThroughTheSpeaker()
        {
            var saved = new Conversation { PersonaId = "tavern_keeper", ConversationId = "player" };
            saved.Turns.Add(new Turn { PlayerLine = "Hi", NpcLine = "Hm." });
            var export = new ScriptedTransport().Message(new ExportConversationResponse { Conversation = saved }).Trailer(0);
            var speaker = _npc.AddComponent<NpcSpeaker>();
            speaker.UseClient(new NpcClient(export));
            string save = Sync.Run(speaker.ExportConversationAsync());
            Assert.AreEqual("Hm.", ConversationSave.FromSaveString(save).Turns[0].NpcLine);

            var import = new ScriptedTransport().Message(new ImportConversationResponse { ImportedTurns = 1 }).Trailer(0);
            speaker.UseClient(new NpcClient(import));
            speaker.ConversationId = "slot-2";
            Assert.AreEqual(1, Sync.Run(speaker.ImportConversationAsync(save)));
        }

        [Test]
        public void NarratorTypesTheSpeakersLine()
        {
            var log = new List<string>();
            var transport = new ScriptedTransport().Message(Delta("Two ")).Message(Delta("silver.")).Message(Final("Two silver.", false))
                .Trailer(0);
            var speaker = Speaker(transport, log);
            var narrator = _npc.AddComponent<NpcNarrator>();
            var shown = new List<string>();
            narrator.onTextChanged.AddListener(shown.Add);
            narrator.Speaker = speaker;
            speaker.Say("Room?");
            speaker.DispatchPendingEvents();
            narrator.RevealAll();
            Assert.AreEqual("Two silver.", narrator.VisibleText);
            Assert.AreEqual("Two silver.", shown[shown.Count - 1]);
            Assert.AreEqual("", shown[0], "a new line clears the previous one");
        }
    }

    [TestFixture]
    public class NpcConnectionSettingsTests
    {
        [Test]
        public void CreatesAUnityWebRequestClientForTheUrl()
        {
            var settings = ScriptableObject.CreateInstance<NpcConnectionSettings>();
            Assert.AreEqual("http://127.0.0.1:8080", settings.ServerUrl);
            settings.ServerUrl = "http://game-server:9000/";
            var transport = (UnityWebRequestTransport)settings.CreateClient().Transport;
            Assert.AreEqual("http://game-server:9000", transport.BaseUrl);
        }

        [Test]
        public void BadUrlSaysWhatToFix()
        {
            var settings = ScriptableObject.CreateInstance<NpcConnectionSettings>();
            settings.ServerUrl = "localhost:8080";
            StringAssert.Contains("http://127.0.0.1:8080", Assert.Throws<ArgumentException>(() => settings.CreateClient()).Message);
        }
    }
}
