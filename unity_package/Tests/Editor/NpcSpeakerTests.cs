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

    // Actions through the speaker: calls raised on the main thread, handlers run there, results sent back.
    [TestFixture]
    public class NpcSpeakerActionTests
    {
        const string Arguments = "{\"gate\":\"north\"}";
        GameObject _npc;

        [SetUp]
        public void CreateNpc()
        {
            _npc = new GameObject("Guard");
        }

        [TearDown]
        public void DestroyNpc()
        {
            UnityEngine.Object.DestroyImmediate(_npc);
        }

        static TalkResponse Call(string id, string name, string arguments)
        {
            return new TalkResponse { ActionCall = new ActionCall { Id = id, Name = name, Arguments = arguments } };
        }

        static TalkResponse Final(string text, FinishReason reason, params ActionCall[] calls)
        {
            var final = new CompletionFinal
            {
                Message = new ChatMessage { Role = "assistant", Content = text },
                FinishReason = reason,
            };
            final.ActionCalls.AddRange(calls);
            return new TalkResponse { Final = final };
        }

        static TalkResponse Delta(string text)
        {
            return new TalkResponse { Delta = new ContentDelta { Content = text } };
        }

        NpcSpeaker Speaker(ScriptedTransport transport, List<string> log)
        {
            var speaker = _npc.AddComponent<NpcSpeaker>();
            speaker.UseClient(new NpcClient(transport));
            speaker.onLineStarted.AddListener(() => log.Add("started"));
            speaker.onDelta.AddListener(d => log.Add("delta:" + d));
            speaker.onLineFinished.AddListener((text, json) => log.Add("finished:" + text));
            speaker.onActionCalled.AddListener((name, json) => log.Add("called:" + name + json));
            speaker.onError.AddListener(message => log.Add("error:" + message));
            return speaker;
        }

        // Pumps the main-thread queue (what Update does) until the task ends.
        static T Pump<T>(NpcSpeaker speaker, System.Threading.Tasks.Task<T> task)
        {
            for (int i = 0; i < 200 && !task.IsCompleted; i++)
            {
                speaker.DispatchPendingEvents();
                System.Threading.Thread.Sleep(1);
            }
            speaker.DispatchPendingEvents();
            return Sync.Run(task);
        }

        [Test]
        public void AwaitedActionRunsOnTheMainThreadAndItsResultGoesBack()
        {
            var log = new List<string>();
            var call = new ActionCall { Id = "call_1", Name = "open_gate", Arguments = Arguments };
            var transport = new ScriptedTransport()
                .Message(Delta("Aye.")).Message(Call("call_1", "open_gate", Arguments))
                .Message(Final("Aye.", FinishReason.Action, call)).Trailer(0)
                .NextCall().Message(Delta("It's open.")).Message(Final("It's open.", FinishReason.Stop)).Trailer(0);
            var speaker = Speaker(transport, log);
            int mainThread = System.Threading.Thread.CurrentThread.ManagedThreadId;
            int handlerThread = -1;
            speaker.RegisterAction("open_gate", "Opens a gate.", "{\"type\":\"object\"}", true, c =>
            {
                handlerThread = System.Threading.Thread.CurrentThread.ManagedThreadId;
                log.Add("handler:" + c.GetString("gate"));
                return "The " + c.GetString("gate") + " gate is open.";
            });
            var task = speaker.SayAsync("Open the gate!");
            Assert.IsFalse(log.Contains("handler:north"), "the handler waits for the main thread");
            var line = Pump(speaker, task);
            Assert.AreEqual(mainThread, handlerThread);
            Assert.AreEqual(new[]
            {
                "started", "delta:Aye.", "called:open_gate" + Arguments, "handler:north", "finished:Aye.",
                "started", "delta:It's open.", "finished:It's open.",
            }, log.ToArray());
            Assert.IsTrue(line.AwaitsResults);
            Assert.AreEqual("It's open.", line.FollowUp.Text);
            Assert.AreSame(line.FollowUp, line.Last);
            Assert.AreEqual("The north gate is open.", line.FollowUp.ActionResults["call_1"]);
            Assert.AreEqual(2, transport.Calls);
            var first = TalkRequest.ParseFrom(GrpcWebFrameBody(transport.Requests[0]));
            Assert.AreEqual("open_gate", first.Actions[0].Name);
            Assert.IsTrue(first.Actions[0].AwaitResult);
            var followUp = TalkRequest.ParseFrom(GrpcWebFrameBody(transport.Requests[1]));
            Assert.AreEqual("", followUp.Text, "a follow-up carries no player text");
            Assert.AreEqual("call_1", followUp.ActionResults[0].CallId);
            Assert.AreEqual("The north gate is open.", followUp.ActionResults[0].Content);
        }

        [Test]
        public void InspectorBindingHandlesThePersonasActionAndNamedChoiceIsSent()
        {
            var log = new List<string>();
            var transport = new ScriptedTransport()
                .Message(Call("call_2", "give_item", "{\"item\":\"room key\"}"))
                .Message(Final("Here.", FinishReason.Stop)).Trailer(0);
            var speaker = Speaker(transport, log);
            var binding = new NpcActionBinding { name = "give_item" };
            binding.onCalled.AddListener(json => log.Add("binding:" + json));
            speaker.ActionBindings.Add(binding);
            speaker.ActionChoice = NpcActionChoice.Named;
            speaker.ActionChoiceName = "give_item";
            var line = Pump(speaker, speaker.SayAsync("Three silver."));
            Assert.AreEqual(new[]
            {
                "started", "called:give_item{\"item\":\"room key\"}", "binding:{\"item\":\"room key\"}",
                "finished:Here.",
            }, log.ToArray());
            Assert.IsFalse(line.AwaitsResults);
            Assert.IsNull(line.FollowUp);
            Assert.AreEqual(1, transport.Calls, "fire-and-forget sends nothing back");
            var request = TalkRequest.ParseFrom(GrpcWebFrameBody(transport.Requests[0]));
            Assert.AreEqual(0, request.Actions.Count, "the persona declares give_item; the binding only handles it");
            Assert.AreEqual(ActionChoice.Types.Mode.Named, request.ActionChoice.Mode);
            Assert.AreEqual("give_item", request.ActionChoice.Name);
        }

        [Test]
        public void AwaitedActionWithoutHandlerWaitsForTheGame()
        {
            var log = new List<string>();
            var call = new ActionCall { Id = "call_3", Name = "ring_bell", Arguments = "{}" };
            var transport = new ScriptedTransport()
                .Message(Call("call_3", "ring_bell", "{}")).Message(Final("", FinishReason.Action, call)).Trailer(0)
                .NextCall().Message(Final("Ding.", FinishReason.Stop)).Trailer(0);
            var speaker = Speaker(transport, log);
            speaker.RegisterAction("ring_bell", "Rings the bell.", "", true, null);
            var line = Pump(speaker, speaker.SayAsync("Ring it."));
            Assert.IsTrue(line.AwaitsResults);
            Assert.IsNull(line.FollowUp);
            Assert.AreEqual(1, transport.Calls);
            var results = new Dictionary<string, string> { { "call_3", "rang" } };
            var follow = Pump(speaker, speaker.SendActionResultsAsync(results));
            Assert.AreEqual("Ding.", follow.Text);
            var sent = TalkRequest.ParseFrom(GrpcWebFrameBody(transport.Requests[1]));
            Assert.AreEqual("rang", sent.ActionResults[0].Content);
            Assert.AreEqual("", sent.Text);
        }

        [Test]
        public void BadActionNamesSayWhatToFix()
        {
            var speaker = _npc.AddComponent<NpcSpeaker>();
            var e = Assert.Throws<ArgumentException>(
                () => speaker.RegisterAction("open gate", "", "", false, c => "ok"));
            StringAssert.Contains("'open gate'", e.Message);
            StringAssert.Contains("letters, digits or '_'", e.Message);
        }

        static byte[] GrpcWebFrameBody(NpcHttpRequest request)
        {
            var frame = request.Body;
            var payload = new byte[frame.Length - 5];
            Array.Copy(frame, 5, payload, 0, payload.Length);
            return payload;
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
