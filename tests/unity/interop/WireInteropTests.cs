// Cross-checks the generated C# codec against Python protobuf (tests/unity/wire_fixtures.py builds the same
// messages). Python's bytes must decode to these values and re-encode to the same bytes; C#'s bytes are written
// for the Python side to parse and compare. Runs from tests/unity/run.sh, which sets both directories.
using System;
using System.Collections.Generic;
using System.IO;
using NpcServer.Api.V1;
using NpcServer.Dialogue.Protobuf;
using NUnit.Framework;

namespace NpcServer.Dialogue.Interop
{
    [TestFixture]
    public class WireInteropTests
    {
        static string Dir(string variable)
        {
            string value = Environment.GetEnvironmentVariable(variable);
            if (string.IsNullOrEmpty(value)) Assert.Fail(variable + " is not set; run the tests through tests/unity/run.sh");
            return value;
        }

        static Dictionary<string, IProtoMessage> Expected()
        {
            const string schema = "{\"type\":\"object\",\"properties\":{\"line\":{\"type\":\"string\"}}}";
            var conversation = new Conversation { PersonaId = "tavern_keeper", ConversationId = "save-1/slot 2" };
            conversation.Turns.Add(new Turn
            {
                PlayerLine = "What's on the menu?", NpcLine = "Stew. Again.", CreateTimeMs = 1763740800123L,
                PlayerName = "Ann",
            });
            conversation.Turns.Add(new Turn
            {
                PlayerLine = "Und das Bier?", NpcLine = "Kühl genug. \U0001F37A", CreateTimeMs = 1763740801000L,
            });
            var persona = new Persona
            {
                Id = "tavern_keeper", DisplayName = "Greta", SystemPrompt = "Greta runs the Rusty Tankard.\nShe is gruff.",
                DefaultPreset = "dialogue", MaxTokens = 0, PlayerName = "Traveller",
            };
            persona.ExampleDialogue.Add(new ExampleExchange { PlayerLine = "Room?", NpcLine = "Two silver." });
            persona.Stop.Add("\nPlayer:");
            persona.Stop.Add("###");
            var models = new ListModelsResponse();
            models.Models.Add(new Model
            {
                Id = "gemma-3-270m", Object = "model", Created = 1763740800L, OwnedBy = "npcserver", ContextSize = 8192,
                Backend = "CPU", GpuLayers = -1, HasChatTemplate = false,
            });
            var presets = new ListPresetsResponse { DefaultPreset = "dialogue" };
            presets.Presets.Add(new Preset
            {
                Name = "dialogue", Description = "Lively", Temperature = 0.8f, TopP = 0.95f, TopK = 40, MinP = 0.05f,
                RepeatPenalty = 1.1f,
            });
            presets.Presets.Add(new Preset { Name = "factual", Temperature = -0.0f });
            var chat = new StreamChatCompletionRequest
            {
                Model = "", MaxTokens = -1, TopK = 0,
                ResponseFormat = new ResponseFormat { Type = ResponseFormat.Types.Type.JsonObject },
            };
            chat.Messages.Add(new ChatMessage { Role = "system", Content = "Be brief." });
            chat.Messages.Add(new ChatMessage { Role = "user", Content = "Hi", Name = "Ann" });
            chat.Stop.Add("\n");
            const string itemSchema =
                "{\"type\":\"object\",\"properties\":{\"item\":{\"type\":\"string\",\"enum\":[\"room key\",\"ale\"]}}}";
            var actions = new TalkRequest
            {
                PersonaId = "tavern_keeper", ConversationId = "p",
                ActionChoice = new ActionChoice { Mode = ActionChoice.Types.Mode.Named, Name = "give_item" },
            };
            actions.Actions.Add(new NpcServer.Api.V1.Action
            {
                Name = "open_gate", Description = "Opens the north gate.", AwaitResult = true,
            });
            actions.Actions.Add(new NpcServer.Api.V1.Action { Name = "give_item", ParametersSchema = itemSchema });
            actions.ActionResults.Add(new ActionResult
            {
                CallId = "call_7", Content = "Der Schl\u00fcssel \U0001F511 ist \u00fcbergeben",
            });
            const string arguments = "{\"item\":\"room key\"}";
            var finalAction = new CompletionFinal
            {
                Message = new ChatMessage { Role = "assistant", Content = "Here." },
                FinishReason = FinishReason.Action,
            };
            finalAction.ActionCalls.Add(new ActionCall { Id = "call_7", Name = "give_item", Arguments = arguments });

            return new Dictionary<string, IProtoMessage>
            {
                {
                    "talk_request_full", new TalkRequest
                    {
                        PersonaId = "ship_ai", ConversationId = "save-1/slot 2", Text = "Où est la cale? \U0001F680",
                        Preset = "dialogue", Temperature = 0.0f, TopP = 0.875f, MaxTokens = 64, Seed = -5L,
                        ResponseFormat = new ResponseFormat
                        {
                            Type = ResponseFormat.Types.Type.JsonSchema,
                            JsonSchema = new JsonSchema { Name = "ship_line", Schema = schema, Strict = true },
                        },
                        PlayerName = "Ann",
                    }
                },
                { "talk_request_minimal", new TalkRequest { PersonaId = "tavern_keeper", ConversationId = "p", Text = "Hi" } },
                { "talk_response_delta", new TalkResponse { Delta = new ContentDelta { Content = "Ale, " } } },
                {
                    "talk_response_final", new TalkResponse
                    {
                        Final = new CompletionFinal
                        {
                            Message = new ChatMessage
                            {
                                Role = "assistant", Content = "{\"line\":\"Aye\",\"emotion\":\"calm\",\"action\":\"none\"}",
                            },
                            FinishReason = FinishReason.Length,
                            Usage = new Usage { PromptTokens = 120, CompletionTokens = 16, TotalTokens = 136 },
                            Timings = new Timings
                            {
                                PromptEvalCount = 10, PromptEvalMs = 1.5, EvalCount = 4, EvalMs = -0.0,
                                TimeToFirstTokenMs = 12.25, QueueMs = 3.0, CachedPromptTokens = 7,
                            },
                            Structured = new StructuredOutput { Valid = true, SchemaName = "ship_line" },
                            TruncatedTurns = 2,
                        },
                    }
                },
                { "import_conversation_request", new ImportConversationRequest { Conversation = conversation } },
                { "get_persona_response", new GetPersonaResponse { Persona = persona } },
                { "list_models_response", models },
                { "list_presets_response", presets },
                { "stream_chat_completion_request", chat },
                { "talk_request_actions", actions },
                {
                    "talk_response_action_call", new TalkResponse
                    {
                        ActionCall = new ActionCall { Id = "call_7", Name = "give_item", Arguments = arguments, Index = 1 },
                        Id = "talk-1",
                    }
                },
                { "talk_response_final_action", new TalkResponse { Final = finalAction } },
            };
        }

        static T Decode<T>(string name) where T : IProtoMessage, new()
        {
            byte[] python = File.ReadAllBytes(Path.Combine(Dir("NPC_WIRE_FIXTURES"), name + ".bin"));
            var message = ProtoReader.Parse<T>(python);
            // Decoding then re-encoding must give Python's bytes exactly: every field read, none invented.
            CollectionAssert.AreEqual(python, ProtoWriter.Serialize(message), name + ": C# re-encoding differs");
            return message;
        }

        [Test]
        public void CSharpEncodingsAreWrittenForPython()
        {
            string outDir = Dir("NPC_WIRE_OUT");
            Directory.CreateDirectory(outDir);
            foreach (var pair in Expected())
            {
                File.WriteAllBytes(Path.Combine(outDir, pair.Key + ".cs.bin"), ProtoWriter.Serialize(pair.Value));
            }
            Assert.AreEqual(12, Directory.GetFiles(outDir, "*.cs.bin").Length);
        }

        [Test]
        public void CSharpEncodingsEqualPythonBytes()
        {
            foreach (var pair in Expected())
            {
                byte[] python = File.ReadAllBytes(Path.Combine(Dir("NPC_WIRE_FIXTURES"), pair.Key + ".bin"));
                CollectionAssert.AreEqual(python, ProtoWriter.Serialize(pair.Value), pair.Key);
            }
        }

        [Test]
        public void FullTalkRequestDecodes()
        {
            var m = Decode<TalkRequest>("talk_request_full");
            Assert.AreEqual("ship_ai", m.PersonaId);
            Assert.AreEqual("Où est la cale? \U0001F680", m.Text);
            Assert.IsTrue(m.Temperature.HasValue, "optional temperature=0 must keep its presence");
            Assert.AreEqual(0.0f, m.Temperature.Value);
            Assert.AreEqual(0.875f, m.TopP.Value);
            Assert.AreEqual(64, m.MaxTokens.Value);
            Assert.AreEqual(-5L, m.Seed.Value);
            Assert.AreEqual("dialogue", m.Preset);
            Assert.AreEqual(ResponseFormat.Types.Type.JsonSchema, m.ResponseFormat.Type);
            Assert.IsTrue(m.ResponseFormat.JsonSchema.Strict);
            Assert.AreEqual("ship_line", m.ResponseFormat.JsonSchema.Name);
        }

        [Test]
        public void MinimalTalkRequestLeavesOptionalsUnset()
        {
            var m = Decode<TalkRequest>("talk_request_minimal");
            Assert.AreEqual("tavern_keeper", m.PersonaId);
            Assert.IsFalse(m.Temperature.HasValue);
            Assert.IsNull(m.Preset);
            Assert.IsNull(m.ResponseFormat);
            Assert.AreEqual("", m.PlayerName);
        }

        [Test]
        public void TalkResponseOneofDecodes()
        {
            var delta = Decode<TalkResponse>("talk_response_delta");
            Assert.AreEqual(TalkResponse.EventOneofCase.Delta, delta.EventCase);
            Assert.AreEqual("Ale, ", delta.Delta.Content);
            Assert.IsNull(delta.Final);

            var final = Decode<TalkResponse>("talk_response_final");
            Assert.AreEqual(TalkResponse.EventOneofCase.Final, final.EventCase);
            Assert.AreEqual(FinishReason.Length, final.Final.FinishReason);
            Assert.AreEqual(136, final.Final.Usage.TotalTokens);
            Assert.AreEqual(12.25, final.Final.Timings.TimeToFirstTokenMs);
            Assert.AreEqual(long.MinValue, BitConverter.DoubleToInt64Bits(final.Final.Timings.EvalMs), "-0.0 kept");
            Assert.IsTrue(final.Final.Structured.Valid);
            Assert.AreEqual(2, final.Final.TruncatedTurns);
            var line = new NpcLine(final.Final);
            Assert.AreEqual("calm", line.GetStructuredString("emotion"));
        }

        [Test]
        public void ActionMessagesDecode()
        {
            var request = Decode<TalkRequest>("talk_request_actions");
            Assert.AreEqual(2, request.Actions.Count);
            Assert.IsTrue(request.Actions[0].AwaitResult);
            Assert.AreEqual(ActionChoice.Types.Mode.Named, request.ActionChoice.Mode);
            Assert.AreEqual("call_7", request.ActionResults[0].CallId);
            Assert.AreEqual("", request.Text);

            var call = Decode<TalkResponse>("talk_response_action_call");
            Assert.AreEqual(TalkResponse.EventOneofCase.ActionCall, call.EventCase);
            var parsed = new NpcActionCall(call.ActionCall);
            Assert.AreEqual("room key", parsed.GetString("item"));
            Assert.AreEqual(1, parsed.Index);

            var final = Decode<TalkResponse>("talk_response_final_action");
            var line = new NpcLine(final.Final);
            Assert.IsTrue(line.AwaitsResults);
            Assert.AreEqual("give_item", line.ActionCalls[0].Name);
        }

        [Test]
        public void ConversationDecodes()
        {
            var m = Decode<ImportConversationRequest>("import_conversation_request");
            Assert.AreEqual(2, m.Conversation.Turns.Count);
            Assert.AreEqual(1763740800123L, m.Conversation.Turns[0].CreateTimeMs);
            Assert.AreEqual("Kühl genug. \U0001F37A", m.Conversation.Turns[1].NpcLine);
            Assert.AreEqual("", m.Conversation.Turns[1].PlayerName);
        }

        [Test]
        public void PersonaModelsAndPresetsDecode()
        {
            var persona = Decode<GetPersonaResponse>("get_persona_response").Persona;
            Assert.AreEqual("Greta", persona.DisplayName);
            Assert.AreEqual(new[] { "\nPlayer:", "###" }, persona.Stop.ToArray());
            Assert.IsTrue(persona.MaxTokens.HasValue);
            Assert.AreEqual("Two silver.", persona.ExampleDialogue[0].NpcLine);

            var model = Decode<ListModelsResponse>("list_models_response").Models[0];
            Assert.AreEqual(-1, model.GpuLayers);
            Assert.AreEqual(8192, model.ContextSize);

            var presets = Decode<ListPresetsResponse>("list_presets_response");
            Assert.AreEqual(0.8f, presets.Presets[0].Temperature);
            Assert.AreEqual(1.1f, presets.Presets[0].RepeatPenalty);
            Assert.AreEqual("dialogue", presets.DefaultPreset);

            var chat = Decode<StreamChatCompletionRequest>("stream_chat_completion_request");
            Assert.AreEqual(-1, chat.MaxTokens.Value);
            Assert.AreEqual(0, chat.TopK.Value);
            Assert.AreEqual("Ann", chat.Messages[1].Name);
        }
    }
}
