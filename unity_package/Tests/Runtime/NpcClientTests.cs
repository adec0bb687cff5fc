using System;
using System.Collections.Generic;
using System.Threading;
using NpcServer.Api.V1;
using NpcServer.Dialogue.GrpcWeb;
using NUnit.Framework;

namespace NpcServer.Dialogue.Tests
{
    [TestFixture]
    public class NpcClientTests
    {
        static TalkResponse Delta(string text)
        {
            return new TalkResponse { Delta = new ContentDelta { Content = text } };
        }

        static TalkResponse Final(string text, StructuredOutput structured = null)
        {
            return new TalkResponse
            {
                Final = new CompletionFinal
                {
                    Message = new ChatMessage { Role = "assistant", Content = text },
                    FinishReason = FinishReason.Stop,
                    Structured = structured,
                },
            };
        }

        [Test]
        public void TalkStreamsDeltasInOrderThenReturnsTheLine()
        {
            var transport = new ScriptedTransport()
                .Message(Delta("Stew")).Message(Delta(". Again")).Message(Delta(".")).Message(Final("Stew. Again."))
                .Trailer(0);
            var deltas = new Recorder<string>();
            var line = Sync.Run(new NpcClient(transport).TalkAsync("tavern_keeper", "p1", "Menu?", deltas));
            Assert.AreEqual(new[] { "Stew", ". Again", "." }, deltas.Items.ToArray());
            Assert.AreEqual("Stew. Again.", line.Text);
            Assert.AreEqual(string.Concat(deltas.Items.ToArray()), line.Text);
            Assert.IsFalse(line.IsStructured);
            Assert.IsNull(line.StructuredJson);
        }

        [Test]
        public void TalkSendsARequestIdAndTheConversationKeyAndARetryOfTheRequestKeepsTheId()
        {
            var replayed = Final("Stew.");
            replayed.Final.Replayed = true;
            var transport = new ScriptedTransport().Trailer(14, "replica gone").NextCall().Message(replayed).Trailer(0);
            var client = new NpcClient(transport);
            var request = new TalkRequest { PersonaId = "tavern_keeper", ConversationId = "p 1", Text = "Menu?" };
            var error = Sync.Catch(() => client.TalkAsync(request, null));
            Assert.AreEqual(GrpcStatusCode.Unavailable, ((NpcRpcException)error).StatusCode);
            Assert.AreEqual(1, transport.Calls, "the client does not retry by itself");
            var line = Sync.Run(client.TalkAsync(request, null));  // the game's retry: the same request
            var ids = new List<string>();
            foreach (var sent in transport.Requests)
            {
                Assert.AreEqual("tavern_keeper/p%201", sent.Headers["x-npc-conversation"]);
                ids.Add(TalkRequest.ParseFrom(new GrpcWebDecoder().Feed(sent.Body)[0].Payload).RequestId);
            }
            Assert.AreEqual(32, ids[0].Length);
            Assert.AreEqual(ids[0], ids[1]);
            Assert.IsTrue(line.Replayed);
            Assert.AreEqual("Stew.", line.Text);
            var other = new TalkRequest { PersonaId = "tavern_keeper", ConversationId = "p 1", Text = "And?" };
            Sync.Run(client.TalkAsync(other, null));
            Assert.AreNotEqual(ids[0], TalkRequest.ParseFrom(
                new GrpcWebDecoder().Feed(transport.LastRequest.Body)[0].Payload).RequestId, "a new line, a new id");
        }

        [Test]
        public void RequestIsOneFramedTalkRequestWithGrpcWebHeaders()
        {
            var transport = new ScriptedTransport().Message(Final("ok")).Trailer(0);
            Sync.Run(new NpcClient(transport, "secret-key").TalkAsync("tavern_keeper", "p1", "Hello", null));
            var request = transport.LastRequest;
            Assert.AreEqual("/npcserver.api.v1.ConversationService/Talk", request.Path);
            Assert.AreEqual("application/grpc-web+proto", request.Headers["content-type"]);
            Assert.AreEqual("1", request.Headers["x-grpc-web"]);
            Assert.AreEqual("Bearer secret-key", request.Headers["authorization"]);
            var frames = new GrpcWebDecoder().Feed(request.Body);
            Assert.AreEqual(1, frames.Count);
            var sent = TalkRequest.ParseFrom(frames[0].Payload);
            Assert.AreEqual("tavern_keeper", sent.PersonaId);
            Assert.AreEqual("p1", sent.ConversationId);
            Assert.AreEqual("Hello", sent.Text);
        }

        [Test]
        public void NoApiKeyMeansNoAuthorizationHeader()
        {
            var transport = new ScriptedTransport().Message(new ListModelsResponse()).Trailer(0);
            Sync.Run(new NpcClient(transport, "").ListModelsAsync());
            Assert.IsFalse(transport.LastRequest.Headers.ContainsKey("authorization"));
        }

        [Test]
        public void StructuredLineExposesJsonAndFields()
        {
            const string json = "{\"line\":\"Course laid in.\",\"emotion\":\"calm\",\"action\":\"none\"}";
            var transport = new ScriptedTransport()
                .Message(Delta("{\"line\"")).Message(Final(json, new StructuredOutput { Valid = true })).Trailer(0);
            var line = Sync.Run(new NpcClient(transport).TalkAsync("ship_ai", "p1", "Status?", null));
            Assert.IsTrue(line.IsStructuredValid);
            Assert.AreEqual(json, line.StructuredJson);
            Assert.AreEqual("Course laid in.", line.GetStructuredString("line"));
            Assert.AreEqual("calm", line.Structured["emotion"]);
        }

        [Test]
        public void InvalidStructuredLineHasNoJson()
        {
            var transport = new ScriptedTransport()
                .Message(Final("{\"line\":", new StructuredOutput { Valid = false, Error = "cut off" })).Trailer(0);
            var line = Sync.Run(new NpcClient(transport).TalkAsync("ship_ai", "p1", "Status?", null));
            Assert.IsTrue(line.IsStructured);
            Assert.IsFalse(line.IsStructuredValid);
            Assert.IsNull(line.StructuredJson);
            Assert.AreEqual("cut off", line.StructuredError);
            Assert.IsNull(line.Structured);
        }

        [Test]
        public void NotFoundTrailerThrowsTypedException()
        {
            var transport = new ScriptedTransport().Trailer(5, "persona%20'nobody'%20not%20found");
            var error = Sync.Catch(() => new NpcClient(transport).TalkAsync("nobody", "p1", "Hi", null));
            Assert.IsInstanceOf<NpcNotFoundException>(error);
            var rpc = (NpcRpcException)error;
            Assert.AreEqual(GrpcStatusCode.NotFound, rpc.StatusCode);
            Assert.AreEqual("persona 'nobody' not found", rpc.StatusMessage);
        }

        [Test]
        public void ErrorAfterSomeDeltasKeepsDeltasAndThrows()
        {
            var transport = new ScriptedTransport().Message(Delta("Ste")).Trailer(13, "engine failed");
            var deltas = new Recorder<string>();
            var error = Sync.Catch(() => new NpcClient(transport).TalkAsync("tavern_keeper", "p1", "Hi", deltas));
            Assert.AreEqual(new[] { "Ste" }, deltas.Items.ToArray());
            Assert.AreEqual(GrpcStatusCode.Internal, ((NpcRpcException)error).StatusCode);
        }

        [Test]
        public void TrailersOnlyErrorInHeadersThrows()
        {
            var headers = new Dictionary<string, string> { { "grpc-status", "3" }, { "grpc-message", "text is empty" } };
            var transport = new ScriptedTransport(200, headers);
            var error = Sync.Catch(() => new NpcClient(transport).TalkAsync("tavern_keeper", "p1", "", null));
            Assert.IsInstanceOf<NpcInvalidArgumentException>(error);
            Assert.AreEqual("text is empty", ((NpcRpcException)error).StatusMessage);
        }

        [Test]
        public void TrailersOnlyErrorWithHttpErrorStatusUsesGrpcStatus()
        {
            var headers = new Dictionary<string, string> { { "grpc-status", "5" }, { "grpc-message", "no such persona" } };
            var error = Sync.Catch(() => new NpcClient(new ScriptedTransport(404, headers)).GetPersonaAsync("x"));
            Assert.IsInstanceOf<NpcNotFoundException>(error);
        }

        [Test]
        public void HttpErrorWithoutGrpcStatusIsMapped()
        {
            var error = Sync.Catch(() => new NpcClient(new ScriptedTransport(404)).ListModelsAsync());
            Assert.AreEqual(GrpcStatusCode.Unimplemented, ((NpcRpcException)error).StatusCode);
            StringAssert.Contains("HTTP 404", error.Message);
            StringAssert.Contains("npcserver HTTP port", error.Message);
        }

        [Test]
        public void HttpAuthErrorQuotesTheServersMessage()
        {
            var transport = new ScriptedTransport(401, new Dictionary<string, string> { { "content-type", "application/json" } })
                .Raw(System.Text.Encoding.UTF8.GetBytes(
                    "{\"error\": {\"message\": \"the API key is wrong\", \"type\": \"authentication_error\"}}"));
            var error = Sync.Catch(() => new NpcClient(transport, "bad").ListModelsAsync());
            Assert.AreEqual(GrpcStatusCode.Unauthenticated, ((NpcRpcException)error).StatusCode);
            StringAssert.Contains("API key", error.Message);
            StringAssert.Contains("server said: the API key is wrong", error.Message);
        }

        [Test]
        public void StreamCutBeforeTrailerIsUnavailable()
        {
            var transport = new ScriptedTransport().Message(Delta("Ste"));
            var error = Sync.Catch(() => new NpcClient(transport).TalkAsync("tavern_keeper", "p1", "Hi", null));
            Assert.AreEqual(GrpcStatusCode.Unavailable, ((NpcRpcException)error).StatusCode);
            StringAssert.Contains("without a gRPC-Web trailer", error.Message);
        }

        [Test]
        public void TalkWithoutFinalMessageIsInternal()
        {
            var transport = new ScriptedTransport().Message(Delta("Ste")).Trailer(0);
            var error = Sync.Catch(() => new NpcClient(transport).TalkAsync("tavern_keeper", "p1", "Hi", null));
            Assert.AreEqual(GrpcStatusCode.Internal, ((NpcRpcException)error).StatusCode);
        }

        [Test]
        public void UnaryWithTwoMessagesIsInternal()
        {
            var transport = new ScriptedTransport().Message(new ListModelsResponse()).Message(new ListModelsResponse())
                .Trailer(0);
            var error = Sync.Catch(() => new NpcClient(transport).ListModelsAsync());
            StringAssert.Contains("more than one message", error.Message);
        }

        [Test]
        public void CancellationStopsTheStream()
        {
            var transport = new ScriptedTransport { HoldOpenAfterChunks = true }.Message(Delta("Ste"));
            var source = new CancellationTokenSource();
            var deltas = new Recorder<string>();
            var task = new NpcClient(transport).TalkAsync("tavern_keeper", "p1", "Hi", deltas, source.Token);
            Assert.IsFalse(task.IsCompleted);
            source.Cancel();
            var error = Sync.Catch(() => task);
            Assert.IsInstanceOf<OperationCanceledException>(error);
            Assert.AreEqual(1, deltas.Items.Count);
        }

        [Test]
        public void AlreadyCancelledTokenSendsNothing()
        {
            var transport = new ScriptedTransport().Message(Final("x")).Trailer(0);
            var source = new CancellationTokenSource();
            source.Cancel();
            var error = Sync.Catch(() => new NpcClient(transport).TalkAsync("tavern_keeper", "p1", "Hi", null, source.Token));
            Assert.IsInstanceOf<OperationCanceledException>(error);
        }

        [Test]
        public void ExportReturnsConversationAndImportSendsIt()
        {
            var conversation = new Conversation { PersonaId = "tavern_keeper", ConversationId = "p1" };
            conversation.Turns.Add(new Turn { PlayerLine = "Hi", NpcLine = "What?" });
            var export = new ScriptedTransport()
                .Message(new ExportConversationResponse { Conversation = conversation }).Trailer(0);
            var exported = Sync.Run(new NpcClient(export).ExportConversationAsync("tavern_keeper", "p1"));
            Assert.AreEqual("What?", exported.Turns[0].NpcLine);

            var import = new ScriptedTransport().Message(new ImportConversationResponse { ImportedTurns = 1 }).Trailer(0);
            Assert.AreEqual(1, Sync.Run(new NpcClient(import).ImportConversationAsync(exported)));
            Assert.AreEqual(ConversationServicePaths.ImportConversation, import.LastRequest.Path);
            var sent = ImportConversationRequest.ParseFrom(new GrpcWebDecoder().Feed(import.LastRequest.Body)[0].Payload);
            Assert.AreEqual("Hi", sent.Conversation.Turns[0].PlayerLine);
        }

        [Test]
        public void EmptyConversationResponseStillNamesTheConversation()
        {
            var transport = new ScriptedTransport().Message(new GetConversationResponse()).Trailer(0);
            var conversation = Sync.Run(new NpcClient(transport).GetConversationAsync("tavern_keeper", "p9"));
            Assert.AreEqual("p9", conversation.ConversationId);
            Assert.AreEqual(0, conversation.Turns.Count);
        }

        [Test]
        public void BaseUrlIsCheckedWithAFix()
        {
            Assert.AreEqual("http://127.0.0.1:8080", NpcClient.NormalizeBaseUrl(" http://127.0.0.1:8080/ "));
            Assert.AreEqual("https://npc.example.com/api", NpcClient.NormalizeBaseUrl("https://npc.example.com/api/"));
            var error = Assert.Throws<ArgumentException>(() => NpcClient.NormalizeBaseUrl("127.0.0.1:8080"));
            StringAssert.Contains("http://", error.Message);
            Assert.Throws<ArgumentException>(() => NpcClient.NormalizeBaseUrl("ftp://host"));
            Assert.Throws<ArgumentException>(() => NpcClient.NormalizeBaseUrl("http://host:8080/?x=1"));
        }
    }
}
