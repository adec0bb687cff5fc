using System;
using NpcServer.Dialogue.Unity;
using UnityEditor;
using UnityEngine;

namespace NpcServer.Dialogue.Editor
{
    /// <summary>
    /// Inspector for <see cref="NpcConnectionSettings"/>: the usual fields plus a "Check connection" button that
    /// lists the server's models, so a wrong URL or a stopped server shows up before entering play mode.
    /// </summary>
    [CustomEditor(typeof(NpcConnectionSettings))]
    public sealed class NpcConnectionSettingsEditor : UnityEditor.Editor
    {
        string _status = "";
        MessageType _statusType = MessageType.None;
        bool _checking;

        /// <inheritdoc />
        public override void OnInspectorGUI()
        {
            DrawDefaultInspector();
            EditorGUILayout.Space();
            GUI.enabled = !_checking;
            if (GUILayout.Button(_checking ? "Checking..." : "Check connection")) CheckConnection();
            GUI.enabled = true;
            if (!string.IsNullOrEmpty(_status)) EditorGUILayout.HelpBox(_status, _statusType);
        }

        async void CheckConnection()
        {
            var settings = (NpcConnectionSettings)target;
            _checking = true;
            _status = "Contacting " + settings.ServerUrl + "...";
            _statusType = MessageType.Info;
            try
            {
                var models = await settings.CreateClient().ListModelsAsync();
                _status = models.Count == 0
                    ? "Connected, but the server lists no model."
                    : "Connected: model " + models[0].Id + " (" + models[0].Backend + ", context "
                      + models[0].ContextSize + " tokens).";
                _statusType = models.Count == 0 ? MessageType.Warning : MessageType.Info;
            }
            catch (Exception e)
            {
                _status = "Cannot use " + settings.ServerUrl + ": " + e.Message;
                _statusType = MessageType.Error;
            }
            finally
            {
                _checking = false;
                Repaint();
            }
        }
    }
}
