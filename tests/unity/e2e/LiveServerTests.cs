// End to end: the package's client over HttpWebRequestTransport against the real npcserver (embedded model) on
// loopback. tests/unity/run.sh passes the server's HTTP door as NPCSERVER_HTTP_URL (pytest's live_server fixture
// starts it). A missing URL fails the tests; nothing is skipped.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Threading;
using System.Threading.Tasks;
using NpcServer.Api.V1;
using NUnit.Framework;

namespace NpcServer.Dialogue.E2E
{
    [TestFixture]
    public class LiveServerTests
    {
        NpcClient _client;

        // Timestamped deltas, recorded synchronously on the transport's thread as each arrives.
        sealed class TimedDeltas : IProgress<string>
        {
            public readonly Stopwatch Clock = Stopwatch.StartNew();
            public readonly List<KeyValuePair<long, string>> Items = new List<KeyValuePair<long, string>>();
            public Action<int> OnCount;

            public void Report(string value)
            {
                int count;
                lock (Items)
                {
                    Items.Add(new KeyValuePair<long, string>(Clock.ElapsedMilliseconds, value));
                    count = Items.Count;
                }
                if (OnCount != null) OnCount(count);
            }
        }

        [SetUp]
        public void Connect()
        {
            string url = Environment.GetEnvironmentVariable("NPCSERVER_HTTP_URL");
            if (string.IsNullOrEmpty(url))
            {
                Assert.Fail("NPCSERVER_HTTP_URL is not set: run through pytest tests/unity (it starts the server)");
            }
            _client = new NpcClient(new HttpWebRequestTransport(url));
        }

        static string NewConversationId(string tag)
        {
            return "unity-" + tag + "-" + Guid.NewGuid().ToString("N").Substring(0, 8);
        }

        static T Run<T>(Task<T> task)
        {
            if (!task.Wait(TimeSpan.FromSeconds(120))) Assert.Fail("call did not finish within 120 s");
            return task.GetAwaiter().GetResult();
        }

        static Exception Catch(Func<Task> action)
        {
            try
            {
                var task = action();
                if (!task.Wait(TimeSpan.FromSeconds(120))) Assert.Fail("call did not finish within 120 s");
            }
            catch (AggregateException e)
            {
                return e.InnerException;
            }
            catch (Exception e)
            {
                return e;
            }
            return null;
        }

        [Test]
        public void GameStateMemoriesAndSummaryComeBackWithASave()
        {
            string id = NewConversationId("knowledge");
            var conversation = new NpcConversation(_client, "tavern_keeper", id) { MaxTokens = 8 };
            conversation.GameState.Add("it is night");
            conversation.GameState.Add("the player carries the silver key");
            var line = Run(conversation.SayAsync("Evening!"));
            Assert.Greater(line.Final.Usage.PromptTokens, 0);
            conversation.GameState.Clear();

            var ring = Run(_client.AddMemoryAsync("tavern_keeper", id, "The player returned the ring.", 8));
            Assert.Greater(ring.Id, 0);
            Assert.AreEqual(8, ring.Importance);
            Assert.AreEqual("game", ring.Source);
            Run(_client.AddMemoryAsync("tavern_keeper", id, "The player likes cider."));
            var memories = Run(_client.ListMemoriesAsync("tavern_keeper", id));
            CollectionAssert.AreEqual(new[] { "The player returned the ring.", "The player likes cider." },
                memories.Select(m => m.Text).ToArray());
            Assert.AreEqual("", Run(_client.GetSummaryAsync("tavern_keeper", id)));
            var summary = Run(_client.SetSummaryAsync("tavern_keeper", id, "The player is a regular."));
            Assert.AreEqual(1, summary.ThroughTurn, "the game's summary covers the turns so far");

            var saved = Run(_client.ExportConversationAsync("tavern_keeper", id));
            Assert.AreEqual("The player is a regular.", saved.Summary.Text);
            Assert.AreEqual(2, saved.Memories.Count);
            Run(_client.ResetConversationAsync("tavern_keeper", id));
            Assert.AreEqual(0, Run(_client.ListMemoriesAsync("tavern_keeper", id)).Count);
            Assert.AreEqual("", Run(_client.GetSummaryAsync("tavern_keeper", id)));
            Assert.AreEqual(1, Run(_client.ImportConversationAsync(saved)));
            Assert.AreEqual("The player is a regular.", Run(_client.GetSummaryAsync("tavern_keeper", id)));
            Assert.AreEqual(2, Run(_client.ListMemoriesAsync("tavern_keeper", id)).Count);

            var error = Catch(() => _client.AddMemoryAsync("tavern_keeper", id, "x", 11));
            Assert.IsInstanceOf<NpcRpcException>(error, "got " + error);
            Assert.AreEqual(GrpcStatusCode.InvalidArgument, ((NpcRpcException)error).StatusCode);
            StringAssert.Contains("importance is 11", ((NpcRpcException)error).StatusMessage);
        }

        [Test]
        public void ServerAnswersUnaryCalls()
        {
            var models = Run(_client.ListModelsAsync());
            Assert.GreaterOrEqual(models.Count, 1);
            Assert.IsNotEmpty(models[0].Id);
            Assert.Greater(models[0].ContextSize, 0);

            var persona = Run(_client.GetPersonaAsync("tavern_keeper"));
            Assert.AreEqual("tavern_keeper", persona.Id);
            Assert.IsNotEmpty(persona.DisplayName);

            var presets = Run(_client.ListPresetsAsync());
            Assert.Greater(presets.Presets.Count, 0);
            Assert.IsTrue(presets.Presets.Any(p => p.Name == presets.DefaultPreset), "default preset is listed");
        }

        [Test]
        public void TalkDeltasArriveIncrementally()
        {
            var deltas = new TimedDeltas();
            var request = new TalkRequest
            {
                PersonaId = "tavern_keeper", ConversationId = NewConversationId("stream"),
                Text = "Good evening. Tell me about the wolves on the north road.", MaxTokens = 48, Seed = 7,
            };
            var line = Run(_client.TalkAsync(request, deltas));
            long finishedAt = deltas.Clock.ElapsedMilliseconds;
            Console.WriteLine("tavern_keeper said: " + line.Text);
            Console.WriteLine("delta arrival ms: " + string.Join(" ", deltas.Items.Select(d => d.Key.ToString()).ToArray()));

            Assert.GreaterOrEqual(deltas.Items.Count, 3, "a streamed reply has several deltas");
            Assert.AreEqual(line.Text, string.Concat(deltas.Items.Select(d => d.Value).ToArray()),
                "the final text is the concatenation of the deltas");
            Assert.IsFalse(line.IsStructured, "tavern_keeper speaks free text");
            Assert.Greater(line.Final.Usage.CompletionTokens, 0);
            // Incremental: deltas reach the client spread over the generation, not in one burst at the end.
            long first = deltas.Items[0].Key;
            long last = deltas.Items[deltas.Items.Count - 1].Key;
            int distinctArrivals = deltas.Items.Select(d => d.Key / 10).Distinct().Count();
            Assert.Greater(last - first, 50, "first and last delta arrived at different times");
            Assert.GreaterOrEqual(distinctArrivals, 3, "deltas arrived at several distinct moments");
            Assert.Greater(finishedAt - first, 50, "the first delta arrived well before the call finished");
        }

        [Test]
        public void StructuredOutputParses()
        {
            var conversation = new NpcConversation(_client, "ship_ai", NewConversationId("ship"));
            var line = Run(conversation.SayAsync("Status report."));
            Console.WriteLine("ship_ai said: " + line.Text);
            Assert.IsTrue(line.IsStructured, "ship_ai has a response schema");
            Assert.IsTrue(line.IsStructuredValid, "structured reply is valid: " + line.StructuredError);
            var payload = line.Structured;
            Assert.IsNotNull(payload, "payload parses as a JSON object");
            Assert.IsNotEmpty(line.GetStructuredString("line"));
            CollectionAssert.Contains(new[] { "calm", "concerned", "pleased", "alarmed" }, payload["emotion"]);
            CollectionAssert.Contains(
                new[] { "none", "open_door", "close_door", "dim_lights", "raise_shields", "plot_course" },
                payload["action"]);
        }

        [Test]
        public void UnknownPersonaThrowsNotFound()
        {
            var error = Catch(() => _client.TalkAsync("no_such_persona", NewConversationId("nf"), "Hello?", null));
            Assert.IsInstanceOf<NpcNotFoundException>(error, "got " + error);
            var rpc = (NpcRpcException)error;
            Assert.AreEqual(GrpcStatusCode.NotFound, rpc.StatusCode);
            StringAssert.Contains("no_such_persona", rpc.StatusMessage);

            var getError = Catch(() => _client.GetPersonaAsync("no_such_persona"));
            Assert.IsInstanceOf<NpcNotFoundException>(getError);
        }

        [Test]
        public void InvalidRequestThrowsInvalidArgumentWithAFix()
        {
            var error = Catch(() => _client.TalkAsync("tavern_keeper", NewConversationId("bad"), "", null));
            Assert.IsInstanceOf<NpcInvalidArgumentException>(error, "got " + error);
            Assert.IsNotEmpty(((NpcRpcException)error).StatusMessage);
        }

        // The tavern keeper's own give_item (fire-and-forget), forced by a named choice: the call arrives with
        // arguments from the schema's enum, the handler runs with them, and nothing is awaited.
        [Test]
        public void NamedActionCallArrivesValidatedAndRunsItsHandler()
        {
            string conversationId = NewConversationId("give");
            var conversation = new NpcConversation(_client, "tavern_keeper", conversationId) { MaxTokens = 60 };
            conversation.ActionChoice = new ActionChoice { Mode = ActionChoice.Types.Mode.Named, Name = "give_item" };
            var called = new List<NpcActionCall>();
            conversation.ActionCalled += c => { lock (called) called.Add(c); };
            string handled = null;
            conversation.HandleAction("give_item", c =>
            {
                handled = c.GetString("item");
                return Task.FromResult<string>(null);
            });
            var line = Run(conversation.SayAsync("Here are three silver. I'll take the room."));
            Assert.AreEqual(1, line.ActionCalls.Count, "one call: " + line.Final.FinishReason);
            var call = line.ActionCalls[0];
            Assert.AreEqual("give_item", call.Name);
            CollectionAssert.Contains(new[] { "room key", "mutton stew", "brown ale" }, call.GetString("item"));
            StringAssert.StartsWith("call_", call.Id);
            Assert.AreEqual(call.GetString("item"), handled, "the handler ran with the arguments");
            Assert.AreEqual(1, called.Count, "ActionCalled once");
            Assert.AreEqual(call.Id, called[0].Id);
            Assert.AreEqual(FinishReason.Stop, line.FinishReason, "fire-and-forget ends with STOP");
            Assert.IsNull(line.FollowUp);
            var stored = Run(_client.GetConversationAsync("tavern_keeper", conversationId));
            Assert.AreEqual(call.Id, stored.Turns[0].ActionCalls[0].Id, "the stored turn keeps the call");
        }

        // An action the game declares that awaits its result: the line ends with FinishReason.Action, the handler's
        // result goes back with the next Talk (no player text), the NPC speaks about it, and both turns are stored.
        [Test]
        public void AwaitedActionResultRoundTrips()
        {
            string conversationId = NewConversationId("gate");
            var conversation = new NpcConversation(_client, "tavern_keeper", conversationId) { MaxTokens = 40 };
            conversation.RegisterAction(new NpcServer.Api.V1.Action
            {
                Name = "open_gate",
                Description = "Opens a gate of the town for the traveler.",
                ParametersSchema = "{\"type\":\"object\",\"properties\":{\"gate\":{\"type\":\"string\","
                    + "\"enum\":[\"north\",\"south\"]}},\"required\":[\"gate\"]}",
                AwaitResult = true,
            }, c => Task.FromResult("The " + c.GetString("gate") + " gate is open."));
            conversation.ActionChoice = new ActionChoice { Mode = ActionChoice.Types.Mode.Named, Name = "open_gate" };
            var line = Run(conversation.SayAsync("Open the gate for me, please."));
            Assert.AreEqual(FinishReason.Action, line.FinishReason);
            Assert.IsTrue(line.AwaitsResults);
            var call = line.ActionCalls.Single();
            string result = "The " + call.GetString("gate") + " gate is open.";
            CollectionAssert.Contains(new[] { "north", "south" }, call.GetString("gate"));
            Assert.IsNotNull(line.FollowUp, "the result went back and the NPC answered");
            Assert.AreEqual(result, line.FollowUp.ActionResults[call.Id]);
            Assert.IsNotEmpty(line.FollowUp.Text.Trim(), "the NPC speaks about the result");
            var turns = Run(_client.GetConversationAsync("tavern_keeper", conversationId)).Turns;
            Assert.AreEqual(2, turns.Count);
            Assert.AreEqual(call.Id, turns[0].ActionCalls[0].Id);
            Assert.AreEqual(call.Id, turns[1].ActionResults[0].CallId);
            Assert.AreEqual(result, turns[1].ActionResults[0].Content);
            Assert.AreEqual("", turns[1].PlayerLine);
        }

        [Test]
        public void ResultWithNoPendingCallIsInvalidArgument()
        {
            var conversation = new NpcConversation(_client, "tavern_keeper", NewConversationId("nocall"));
            var results = new Dictionary<string, string> { { "call_nope", "done" } };
            var error = Catch(() => conversation.SendActionResultsAsync(results));
            Assert.IsInstanceOf<NpcInvalidArgumentException>(error, "got " + error);
            StringAssert.Contains("call", ((NpcRpcException)error).StatusMessage);
        }

        [Test]
        public void CancellationStopsTheStream()
        {
            string conversationId = NewConversationId("cancel");
            var source = new CancellationTokenSource();
            var deltas = new TimedDeltas();
            long cancelledAt = -1;
            int countAtCancel = 0;
            deltas.OnCount = count =>
            {
                if (count == 2)
                {
                    cancelledAt = deltas.Clock.ElapsedMilliseconds;
                    countAtCancel = count;
                    source.Cancel();
                }
            };
            var request = new TalkRequest
            {
                PersonaId = "tavern_keeper", ConversationId = conversationId,
                Text = "Tell me the whole long history of this village.", MaxTokens = 400,
            };
            var error = Catch(() => _client.TalkAsync(request, deltas, source.Token));
            long endedAt = deltas.Clock.ElapsedMilliseconds;
            Assert.IsInstanceOf<OperationCanceledException>(error, "got " + error);
            Assert.GreaterOrEqual(cancelledAt, 0, "the stream produced deltas before the cancel");
            Assert.Less(endedAt - cancelledAt, 2000, "the call ended promptly after the cancel");
            // Deltas already decoded from the same network chunk may still be delivered; nothing after that.
            Thread.Sleep(500);
            Assert.LessOrEqual(deltas.Items.Count, countAtCancel + 4, "no deltas trickle in after the cancel");
            // The server stores a turn only when the reply completes, so a cancelled line leaves nothing.
            var stored = Run(_client.GetConversationAsync("tavern_keeper", conversationId));
            Assert.AreEqual(0, stored.Turns.Count, "a cancelled line stores no turn");
        }

        [Test]
        public void ExportThenImportRestoresTheConversation()
        {
            var conversation = new NpcConversation(_client, "tavern_keeper", NewConversationId("save")) { MaxTokens = 16 };
            var line = Run(conversation.SayAsync("A room for the night?"));
            string save = Run(conversation.ExportAsync());
            var saved = ConversationSave.FromSaveString(save);
            Assert.AreEqual(1, saved.Turns.Count);
            Assert.AreEqual("A room for the night?", saved.Turns[0].PlayerLine);
            Assert.AreEqual(line.Text, saved.Turns[0].NpcLine);

            Assert.AreEqual(1, Run(conversation.ResetAsync()));
            Assert.AreEqual(0, Run(_client.GetConversationAsync(conversation.PersonaId, conversation.ConversationId)).Turns.Count);

            Assert.AreEqual(1, Run(conversation.ImportAsync(save)));
            var restored = Run(_client.GetConversationAsync(conversation.PersonaId, conversation.ConversationId));
            Assert.AreEqual(1, restored.Turns.Count);
            Assert.AreEqual(saved.Turns[0].PlayerLine, restored.Turns[0].PlayerLine);
            Assert.AreEqual(saved.Turns[0].NpcLine, restored.Turns[0].NpcLine);
            Assert.AreEqual(saved.Turns[0].CreateTimeMs, restored.Turns[0].CreateTimeMs);

            // The same save loads into another slot too (a second save game).
            var other = new NpcConversation(_client, "tavern_keeper", NewConversationId("slot2"));
            Assert.AreEqual(1, Run(other.ImportAsync(save)));
            Assert.AreEqual(line.Text, Run(_client.GetConversationAsync("tavern_keeper", other.ConversationId)).Turns[0].NpcLine);
        }
    }
}

namespace NpcServer.Dialogue.E2E
{
    // Against a second server started with NPCSERVER_API_KEY, a player token secret and TLS (pytest's server_factory):
    // the client's API key (or a player token) is sent as "authorization: Bearer" over HTTPS, and a missing or wrong
    // key fails with UNAUTHENTICATED and the server's hint.
    [TestFixture]
    public class ApiKeyTests
    {
        // The server's certificate comes from a throwaway CA (trustme) that the system does not trust. Pin that one
        // certificate, as a game with its own server may, so mono's HttpWebRequest transport is tested over real TLS:
        // the host name is still checked. (Mono's X509Chain cannot build trustme's chain, so the CA is not used.)
        [TestFixtureSetUp]
        public void PinTheServerCertificate()
        {
            StringAssert.StartsWith("https://", Env("NPCSERVER_KEYED_HTTP_URL"));
            string pem = File.ReadAllText(Env("NPCSERVER_KEYED_CERT_PEM"));
            int begin = pem.IndexOf("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal) + 27;
            int end = pem.IndexOf("-----END CERTIFICATE-----", begin, StringComparison.Ordinal);
            var pinned = new X509Certificate2(Convert.FromBase64String(pem.Substring(begin, end - begin).Trim()));
            ServicePointManager.ServerCertificateValidationCallback = (sender, certificate, chain, errors) =>
                errors == SslPolicyErrors.None
                || (errors == SslPolicyErrors.RemoteCertificateChainErrors
                    && new X509Certificate2(certificate).Thumbprint == pinned.Thumbprint);
        }

        [TestFixtureTearDown]
        public void ForgetTheTestCa()
        {
            ServicePointManager.ServerCertificateValidationCallback = null;
        }

        static string Env(string name)
        {
            string value = Environment.GetEnvironmentVariable(name);
            if (string.IsNullOrEmpty(value)) Assert.Fail(name + " is not set: run through pytest tests/unity");
            return value;
        }

        static Exception Catch(Func<Task> action)
        {
            try
            {
                if (!action().Wait(TimeSpan.FromSeconds(60))) Assert.Fail("call did not finish within 60 s");
            }
            catch (AggregateException e)
            {
                return e.InnerException;
            }
            return null;
        }

        [Test]
        public void ApiKeyIsSentAsBearerToken()
        {
            var transport = new HttpWebRequestTransport(Env("NPCSERVER_KEYED_HTTP_URL"));
            var models = new NpcClient(transport, Env("NPCSERVER_KEYED_API_KEY")).ListModelsAsync();
            Assert.IsTrue(models.Wait(TimeSpan.FromSeconds(60)));
            Assert.GreaterOrEqual(models.Result.Count, 1);

            var line = new NpcClient(transport, Env("NPCSERVER_KEYED_API_KEY"))
                .TalkAsync("tavern_keeper", "unity-key-" + Guid.NewGuid().ToString("N"), "Hello.", null);
            Assert.IsTrue(line.Wait(TimeSpan.FromSeconds(120)));
            Assert.IsNotNull(line.Result.Final.Message);
        }

        [Test]
        public void PlayerTokenTalksOnlyInItsOwnConversations()
        {
            // A JWT that a game backend minted (npcserver.client.mint_player_token) goes where the API key goes.
            var transport = new HttpWebRequestTransport(Env("NPCSERVER_KEYED_HTTP_URL"));
            var client = new NpcClient(transport, Env("NPCSERVER_KEYED_PLAYER_TOKEN"));
            var own = client.TalkAsync("tavern_keeper", "unity-player:" + Guid.NewGuid().ToString("N"), "Hello.", null);
            Assert.IsTrue(own.Wait(TimeSpan.FromSeconds(120)));
            Assert.IsNotNull(own.Result.Final.Message);

            var error = Catch(() => client.TalkAsync("tavern_keeper", "someone-else:save", "Hello.", null));
            Assert.IsInstanceOf<NpcRpcException>(error, "got " + error);
            Assert.AreEqual(GrpcStatusCode.PermissionDenied, ((NpcRpcException)error).StatusCode);
            StringAssert.Contains("'unity-player:'", error.Message);
        }

        [Test]
        public void MissingOrWrongKeyIsUnauthenticated()
        {
            var transport = new HttpWebRequestTransport(Env("NPCSERVER_KEYED_HTTP_URL"));
            foreach (var key in new[] { null, "wrong-key" })
            {
                var error = Catch(() => new NpcClient(transport, key).ListModelsAsync());
                Assert.IsInstanceOf<NpcRpcException>(error, "key " + (key ?? "(none)") + " got " + error);
                Assert.AreEqual(GrpcStatusCode.Unauthenticated, ((NpcRpcException)error).StatusCode);
                StringAssert.Contains("API key", error.Message);
            }
        }
    }
}
