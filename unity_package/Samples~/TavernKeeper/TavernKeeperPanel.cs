using System;
using System.Collections.Generic;
using NpcServer.Dialogue;
using NpcServer.Dialogue.Unity;
using UnityEngine;

namespace NpcServer.Dialogue.Samples
{
    /// <summary>
    /// A dialogue panel with Greta, the tavern keeper. Add this component to an empty GameObject in any scene,
    /// assign the TavernKeeperSettings asset (or your own), start the npcserver, and press Play. The panel uses
    /// IMGUI so it needs no Canvas, prefab or font: everything it does goes through NpcSpeaker and NpcNarrator.
    /// </summary>
    [AddComponentMenu("NPC Dialogue/Samples/Tavern Keeper Panel")]
    public sealed class TavernKeeperPanel : MonoBehaviour
    {
        const string SaveKey = "npc-dialogue-sample/tavern_keeper";
        const string PayLine = "Here are three silver. I'll take the room.";

        [Tooltip("Connection settings; the sample ships TavernKeeperSettings (http://127.0.0.1:8080).")]
        [SerializeField]
        NpcConnectionSettings settings;

        [Tooltip("The game's id for this conversation; the server remembers it between sessions.")]
        [SerializeField]
        string conversationId = "tavern-sample";

        readonly List<string> _transcript = new List<string>();
        readonly List<string> _inventory = new List<string>();
        NpcSpeaker _speaker;
        NpcNarrator _narrator;
        string _input = "Good evening. What's on the menu?";
        string _status = "";
        Vector2 _scroll;

        void Awake()
        {
            _speaker = gameObject.AddComponent<NpcSpeaker>();
            _speaker.Settings = settings;
            _speaker.PersonaId = "tavern_keeper";
            _speaker.ConversationId = conversationId;
            _speaker.PlayerName = "Traveler";
            _speaker.LineFinished += line => _transcript.Add("Greta: " + line.Text);
            _speaker.Failed += error => _status = "Error: " + error.Message;
            // Greta's persona declares give_item (an enum of items); its handler runs on the main thread.
            _speaker.HandleAction("give_item", call =>
            {
                _inventory.Add(call.GetString("item"));
                _transcript.Add("(Greta hands you the " + call.GetString("item") + ")");
                return null;
            });

            _narrator = gameObject.AddComponent<NpcNarrator>();
            _narrator.Speaker = _speaker;
        }

        void OnGUI()
        {
            GUILayout.BeginArea(new Rect(20, 20, Mathf.Min(640, Screen.width - 40), Screen.height - 40),
                "The Rusty Flagon", GUI.skin.box);
            GUILayout.Space(20);
            _scroll = GUILayout.BeginScrollView(_scroll, GUILayout.ExpandHeight(true));
            foreach (var entry in _transcript) GUILayout.Label(entry);
            if (_speaker.IsTalking || !_narrator.IsCaughtUp) GUILayout.Label("Greta: " + _narrator.VisibleText + "_");
            GUILayout.EndScrollView();

            GUILayout.BeginHorizontal();
            GUI.enabled = !_speaker.IsTalking;
            _input = GUILayout.TextField(_input, GUILayout.ExpandWidth(true));
            if (GUILayout.Button("Say", GUILayout.Width(80)) && _input.Trim().Length > 0)
            {
                _transcript.Add("You: " + _input);
                _status = "";
                _speaker.Say(_input);
                _input = "";
            }
            GUI.enabled = true;
            if (GUILayout.Button("Pay 3 silver", GUILayout.Width(110)) && !_speaker.IsTalking) Pay();
            if (GUILayout.Button("Stop", GUILayout.Width(60))) _speaker.Cancel();
            GUILayout.EndHorizontal();

            GUILayout.BeginHorizontal();
            if (GUILayout.Button("Save")) Save();
            if (GUILayout.Button("Load")) Load();
            if (GUILayout.Button("Forget")) Forget();
            GUILayout.EndHorizontal();
            GUILayout.Label("Inventory: " + (_inventory.Count == 0 ? "(empty)" : string.Join(", ", _inventory.ToArray())));
            if (_status.Length > 0) GUILayout.Label(_status);
            GUILayout.EndArea();
        }

        // Paying is when Greta must hand something over, so this line names her give_item action: the server then
        // guarantees the call, and she picks the item from the persona's enum.
        async void Pay()
        {
            _transcript.Add("You: " + PayLine);
            _status = "";
            _speaker.ActionChoice = NpcActionChoice.Named;
            _speaker.ActionChoiceName = "give_item";
            try
            {
                await _speaker.SayAsync(PayLine);
            }
            catch (Exception)
            {
                // Reported through Failed.
            }
            finally
            {
                _speaker.ActionChoice = NpcActionChoice.Auto;
            }
        }

        // A save game: the exported conversation is a plain string, so PlayerPrefs or any save file can hold it.
        async void Save()
        {
            try
            {
                PlayerPrefs.SetString(SaveKey, await _speaker.ExportConversationAsync());
                PlayerPrefs.Save();
                _status = "Saved.";
            }
            catch (Exception)
            {
                // Reported through Failed.
            }
        }

        async void Load()
        {
            if (!PlayerPrefs.HasKey(SaveKey))
            {
                _status = "Nothing saved yet.";
                return;
            }
            try
            {
                int turns = await _speaker.ImportConversationAsync(PlayerPrefs.GetString(SaveKey, ""));
                _transcript.Clear();
                _transcript.Add("(" + turns + " earlier exchanges restored: Greta remembers them.)");
                _status = "Loaded.";
            }
            catch (Exception)
            {
                // Reported through Failed.
            }
        }

        async void Forget()
        {
            try
            {
                await _speaker.ResetConversationAsync();
                _transcript.Clear();
                _status = "Greta has forgotten you.";
            }
            catch (Exception)
            {
                // Reported through Failed.
            }
        }
    }
}
